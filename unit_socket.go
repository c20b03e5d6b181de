package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/template"
)

// install-unit --socket: a systemd socket unit beside the service, holding
// gateway.listen for the gateway (socket activation, listen.go). systemd
// keeps the socket open while no gateway runs, so a drain restart, a crash
// or the crash-loop delay queues the connections that arrive meanwhile
// instead of refusing them. It is rendered from the same policy as the
// service, so its address cannot disagree with gateway.listen.

var (
	//go:embed unit/hermes.socket.tmpl
	socketTemplateText string

	socketTemplate = sync.OnceValue(func() *template.Template {
		return template.Must(template.New("hermes.socket").Parse(socketTemplateText))
	})
)

func socketUnitName(name string) string { return "hermes-" + name + ".socket" }

type socketUnitData struct {
	UnitName, ServiceName, Name, PolicyLabel, Options string
	Listen, ListenStream, BindIPv6Only                string
}

// listenStream is gateway.listen as systemd's ListenStream= writes it. A
// wildcard host (none, 0.0.0.0 or [::]), which the gateway binds on IPv4
// and IPv6 both, is the port alone with BindIPv6Only=both. A host name is
// refused: systemd binds addresses and resolves no names.
func listenStream(listen string) (stream, v6only string, err error) {
	host, port, err := splitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("gateway.listen %q: %v", listen, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("gateway.listen %q: a socket unit needs a port from 1 to 65535", listen)
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	ip := net.ParseIP(bare)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified()):
		return port, "both", nil
	case ip == nil || strings.Contains(bare, "%"):
		return "", "", fmt.Errorf("gateway.listen %q names a host, and systemd binds a socket unit to an address, resolving no names: write an address in the policy, such as \"127.0.0.1:%s\"", listen, port)
	case ip.To4() != nil && !strings.Contains(bare, ":"):
		return bare + ":" + port, "", nil
	}
	return "[" + bare + "]:" + port, "", nil
}

// renderSocketUnit is the socket unit install-unit --socket writes beside
// the service renderUnit writes with the same options.
func renderSocketUnit(p *Policy, o unitOptions) ([]byte, error) {
	if o.Manager != managerSystemd {
		return nil, fmt.Errorf("a socket unit is for systemd")
	}
	stream, v6only, err := listenStream(p.Gateway.Listen)
	if err != nil {
		return nil, err
	}
	d := socketUnitData{
		UnitName:     socketUnitName(p.Name),
		ServiceName:  unitName(p.Name),
		Name:         p.Name,
		PolicyLabel:  unitPolicyLabel(p),
		Options:      o.String(),
		Listen:       p.Gateway.Listen,
		ListenStream: stream,
		BindIPv6Only: v6only,
	}
	var b bytes.Buffer
	if err := socketTemplate().Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkSocketUnitPlace is install-unit's look at the socket unit's path
// before it writes anything. With --socket, a file there must be one
// install-unit wrote. Without, a socket unit install-unit --socket wrote
// before must not stay behind: it would go on holding gateway.listen, and
// the gateway, which now binds it itself, could not start.
func checkSocketUnitPlace(path string, socket bool, p *Policy) error {
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("reading %s: %w", path, err)
	case socket && !bytes.Contains(old, []byte(unitMarker)):
		return withHint(fmt.Errorf("%s exists and was not written by hermes install-unit", path),
			"move it away (or compare it with 'hermes install-unit --socket --print') and run install-unit again")
	case !socket && bytes.Contains(old, []byte(unitMarker)):
		return withHint(fmt.Errorf("%s (from install-unit --socket) is installed, and would go on holding gateway.listen (%s) that the gateway binds itself without it", path, p.Gateway.Listen),
			"keep it: run install-unit again with --socket; or take both units out first (one drain) with hermes uninstall-unit and the same flags, then run install-unit again")
	}
	return nil
}
