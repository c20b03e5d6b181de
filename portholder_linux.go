//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// portHolder finds the process listening on the TCP port of addr, as the
// system tells: the listening socket's inode in /proc/net/tcp and tcp6,
// then the process whose /proc/<pid>/fd links to socket:[inode]. Only
// processes this user may read are looked at; seen says whether the
// holder was among them. who names the process by pid and command name
// (never its arguments, which may hold a secret), and, for a hermes
// gateway, by its instance and state dir.
func portHolder(addr string) (pid int, who string, seen bool) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, "", false
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return 0, "", false
	}
	want := net.ParseIP(host)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, ino := range listeningInodes(f, want, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, "", false
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fdDir := filepath.Join("/proc", d.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // another user's: not ours to look into
		}
		found, stateDir := false, ""
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				found = true
			}
			if filepath.Base(link) == "gateway.lock" {
				stateDir = filepath.Dir(link) // a hermes gateway holds its instance lock open
			}
		}
		if found {
			return pid, describeHolder(pid, stateDir), true
		}
	}
	return 0, "", false
}

// describeHolder names a process for a message: its pid and command name,
// and for a hermes gateway its instance and state dir.
func describeHolder(pid int, stateDir string) string {
	who := fmt.Sprintf("pid %d (%s)", pid, procExe(pid))
	if stateDir == "" {
		return who
	}
	name := "?"
	if rec, err := readPidFile(pidFilePath(stateDir)); err == nil && rec.PID == pid && rec.Name != "" {
		name = rec.Name
	}
	return fmt.Sprintf("pid %d, the hermes gateway %q (state dir %s)", pid, name, stateDir)
}

// listeningInodes returns the inodes of the sockets in a /proc/net/tcp
// table that listen on port, on the address want or on one that overlaps
// it (a wildcard on either side).
func listeningInodes(table string, want net.IP, port int) []string {
	f, err := os.Open(table)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		hexIP, hexPort, ok := strings.Cut(fs[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(hexPort, 16, 16); err != nil || int(p) != port {
			continue
		}
		ip := procNetIP(hexIP)
		if ip == nil || want == nil || ip.IsUnspecified() || want.IsUnspecified() || ip.Equal(want) {
			out = append(out, fs[9])
		}
	}
	return out
}

// procNetIP decodes an address of /proc/net/tcp{,6}: 32-bit words, each
// in the host's byte order.
func procNetIP(s string) net.IP {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil
	}
	ip := make(net.IP, len(b))
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.NativeEndian.Uint32(b[i:]))
	}
	return ip
}

// portHolderCommand is the command that shows who listens on port; as
// root when the holder is another user's.
func portHolderCommand(port string, seen bool) string {
	cmd := fmt.Sprintf("ss -ltnp 'sport = :%s'", port)
	if !seen && os.Geteuid() != 0 {
		cmd = "sudo " + cmd
	}
	return cmd
}
