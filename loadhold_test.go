package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// The hold role: bench/load.sh's memory phase. It opens n connections to a
// proxy (or to the upstream itself) and holds them, so that the script can
// read the proxy's resident memory while they are open:
//
//	HERMES_TEST_ROLE=hold hermes.test -addr A -n 3000 -kind idle -ready FILE
//	HERMES_TEST_ROLE=hold hermes.test -addr A -n 10000 -kind stream -chunks 20 -delay 1s
//
// "idle": each connection gets one short answer, whole, then stays open
// and quiet (a keep-alive client between two requests) until TERM.
// "stream": each connection starts an SSE stream of -chunks chunks -delay
// apart; once every stream has its first chunk (all n open at once) the
// role writes the ready file, then reads every stream to its [DONE] and
// exits. It fails when a connection is not held, a stream is not whole, or
// the n streams were never all open at once (the delay is too short for
// the ramp: make the stream longer).

func runHold(args []string) error {
	fs := roleFlags("hold", "-addr HOST:PORT [-n N] [-kind idle|stream] [-chunks N] [-delay D] [-ready FILE]")
	addr := fs.String("addr", "", "the proxy's `address`")
	n := fs.Int("n", 1000, "connections to hold")
	kind := fs.String("kind", "idle", "idle: one short answer each, then held until TERM; stream: SSE streams read to the end")
	chunks := fs.Int("chunks", 20, "chunks per stream ("+hdrFakeChunks+")")
	delay := fs.Duration("delay", time.Second, "delay between two chunks ("+hdrFakeDelay+")")
	ready := fs.String("ready", "", "`file` written (\"held N\") once all n are held")
	dialers := fs.Int("dialers", 256, "connections being opened at once (within the listen backlog)")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	if *addr == "" || *n < 1 || (*kind != "idle" && *kind != "stream") {
		fs.Usage()
		return errUsage
	}
	stream := *kind == "stream"
	body := fmt.Sprintf(`{"model":"fake","stream":%t,"messages":[{"role":"user","content":"hello"}]}`, stream)
	req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"+
		"%s: %d\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s", hdrFakeChunks, *chunks, hdrFakeDelay, *delay, len(body), body)

	stop := untilSignal()
	var (
		mu            sync.Mutex
		open, maxOpen int // streams between their first chunk and their end
		held, failed  int
		firstErr      error
		conns         = make([]net.Conn, *n)
		wg            sync.WaitGroup
		allHeld       = make(chan struct{})
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failed++
		if firstErr == nil {
			firstErr = err
		}
	}
	// markHeld counts a connection held; a stream counts as open too.
	markHeld := func(stream bool) {
		mu.Lock()
		defer mu.Unlock()
		if stream {
			open++
			maxOpen = max(maxOpen, open)
		}
		if held++; held == *n {
			close(allHeld)
		}
	}
	dial := make(chan struct{}, *dialers)
	for i := range conns {
		select {
		case dial <- struct{}{}:
		case <-stop:
			return errors.New("stopped before every connection was opened")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", *addr, 30*time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				_, err = io.WriteString(c, req)
			}
			if err != nil {
				<-dial
				fail(err)
				return
			}
			conns[i] = c
			br := bufio.NewReaderSize(c, 512)
			if !stream {
				var resp *http.Response
				if resp, err = http.ReadResponse(br, nil); err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				<-dial
				if err != nil {
					fail(err)
					return
				}
				c.SetDeadline(time.Time{})
				markHeld(false)
				return
			}
			first := true
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					if first {
						<-dial
					}
					fail(fmt.Errorf("a stream broke: %w", err))
					return
				}
				if first && strings.HasPrefix(line, "data:") {
					first = false
					<-dial
					markHeld(true)
				}
				if strings.HasPrefix(line, "data: [DONE]") {
					mu.Lock()
					open--
					mu.Unlock()
					c.Close()
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-allHeld:
		if *ready != "" {
			if err := os.WriteFile(*ready, fmt.Appendf(nil, "held %d\n", *n), 0o644); err != nil {
				return err
			}
		}
	case <-done:
	case <-stop:
	}
	if !stream {
		<-done
		if firstErr == nil {
			<-stop
		}
	} else {
		select {
		case <-done:
		case <-stop:
		}
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return fmt.Errorf("%d of %d connections failed; the first: %v", failed, *n, firstErr)
	}
	if stream && maxOpen < *n {
		return fmt.Errorf("at most %d of %d streams were open at once: make the streams longer (-chunks, -delay)", maxOpen, *n)
	}
	fmt.Printf("held %d %s connections", *n, *kind)
	if stream {
		fmt.Printf(", %d open at once, every stream whole", maxOpen)
	}
	fmt.Println()
	return nil
}
