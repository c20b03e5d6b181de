// Command hermes keeps an LLM-agent gateway alive on a small host without
// ever getting stuck.
//
// What follows is a map of the package, for whoever opens it for the first
// time: the concerns, the files each lives in, and how a request and a signal flow
// through them. One flat package on purpose (one binary, one build); the
// file names carry the structure. Every file opens with a comment saying
// what it owns.
//
// # Concerns and their files
//
// The command line:
//   - main.go: the command table (commands), exit codes, errors with hints.
//   - words.go: how a value is written for a person (durations, quoting).
//   - secrets.go: the redactor that keeps every secret out of every line.
//   - lazy.go: regular expressions compiled on first use.
//
// The policy:
//   - config.go: Policy (the effective policy), filePolicy (the file format,
//     the one declaration of every key), loading and validation.
//   - policykeys.go: the key list and kinds, read off filePolicy's tags.
//   - policyrender.go: check-config's listing, from the same declaration.
//   - configerr.go: policy errors for people (file:line: key: what to do).
//
// The gateway process (hermes serve):
//   - serve.go: runServe, the process around the gateway: policy, locks,
//     listener, then the gateway.
//   - gateway.go: the gateway value, built whole by newGateway; states.go:
//     its lifecycle states, which every reader of a gateway shares.
//   - gateway_loop.go: its loop, the one goroutine that owns the state: it
//     waits for an input and carries out effects; loop.go: the loop's
//     rules as a pure transition.
//   - signals.go: the self-pipe, the only way a signal reaches the loop.
//   - outbox.go, log.go, journal.go, notify.go: the I/O the loop hands off
//     (log lines, the events journal, sd_notify) on bounded queues.
//   - watchdog.go, mono.go: the heartbeat and the watchdog that reads it.
//   - crashloop.go, limits*.go, alerts.go: the crash-loop guard, the
//     memory guard (and the RSS it reads), the webhook alerts;
//     memory_release.go: one collection after a burst, so its memory goes
//     back to the system.
//   - control.go: the control socket (status, reload, handoff and drain
//     requests).
//
// Restart without refusing a request:
//   - handoff.go: the seam, the protocol and what crosses it;
//     handoff_parent.go: the predecessor's side (start the successor,
//     follow it, hand over, fail back); handoff_child.go: the successor's
//     side (stand by, take over); handoff_keeper.go: the keeper under
//     systemd and as PID 1.
//   - listen.go, portholder_*.go: where the listening socket comes from,
//     and who holds a port that is taken.
//   - accept.go, conncap.go, conns.go: accepting through fd exhaustion,
//     the connection cap, the tracker that closes idle keep-alives in a
//     drain.
//
// Sessions and the HTTP server:
//   - h1_server.go, h1_parse.go, h1_abort.go: hermes's own HTTP/1.1 server
//     for clients, its strict request reader, and how an answer that went
//     wrong ends; h1_buffers.go: a connection's buffers, held only while
//     bytes move (none while idle or waiting for a stream's next event).
//   - rawio*.go, rawpeek*.go: reading and writing the socket directly.
//   - routes.go: /healthz, /readyz, /status, /metrics and /v1/...
//   - session.go: admission and accounting of each /v1/... request.
//   - auth.go: client keys ([auth]).
//   - upstream_proxy.go, upstream.go, upstream_answer.go, body.go, cancelslot.go:
//     the request to the upstream, its client and answer reader, bodies.
//   - upstream_policy.go, upstream_pool.go: the upstreams ([[upstream]],
//     [failover]): the order a request tries them in, failover before the
//     first byte, each one's health (out, probed, back in);
//     upstream_child.go: a supervised upstream's process ([supervise]).
//   - reattach.go: the streams a client may come back to (Last-Event-ID):
//     each event numbered, kept while nobody is attached, followed by
//     whoever comes back; reattach_serve.go: the session's side (the
//     upstream's context that outlives the client, the relay, the
//     answer to a Last-Event-ID); reattach_handoff.go: a stream served
//     from the predecessor during a handoff; reattach_buf.go: the
//     pooled blocks a stream's events are kept in; reattach_policy.go:
//     [reattach].
//   - echo.go: the built-in echo upstream.
//   - metrics.go, procstats*.go: /metrics.
//   - pprof_on.go: a pprof endpoint, only in a binary built with
//     -tags hermes_pprof.
//
// The Telegram bot:
//   - telegram.go: polling and answering; telegram_api.go: the Bot API
//     client; telegram_store.go: the store that makes "answered exactly
//     once" survive a crash; telegram_upstream.go: a turn's answer.
//   - telegram_host.go: the seam, telegramHost, the one way the bot reaches
//     its gateway (policy, log, alerts, sessions, the upstream path).
//   - tokenlock.go, lock.go: one token, one gateway (flock).
//
// Acting on a gateway from outside:
//   - target.go, registry.go, pidfile.go, proc_*.go: which gateway a
//     command means, and the proof (pid, start time, boot id) that a pid is
//     still that gateway.
//   - inspect.go: the verdict on a gateway (serving, draining, frozen, ...),
//     which status.go prints and restart.go (the escalation ladder of
//     hermes restart and stop) and start.go (start, reload) act on.
//   - healthcheck.go, logs.go, events.go, incident.go: healthcheck, logs,
//     events and the incident report.
//   - manager.go: which service manager owns the gateway, if any.
//
// Test faults:
//   - testfault_on.go, testfault_off.go: the fault switches, only in a
//     binary built with -tags hermes_testfault; a release build has none.
//
// Installing it:
//   - unit.go, unit_socket.go, unitcheck.go: the systemd unit, its socket
//     unit and the launchd plist; kubernetes.go: Kubernetes and compose.
//
// # How a request flows
//
// The accept loop (accept.go) hands a connection to h1Server.serveConn
// (h1_server.go), which reads each request head (h1_parse.go) and calls
// gateway.ServeHTTP (routes.go). A /v1/... request becomes a session
// (session.go: admitted by an atomic gate the loop closes when a drain
// starts), checked against the client keys (auth.go), and proxied
// (upstream_proxy.go): the body is read or streamed (body.go), the upstream client
// writes the request and reads the answer head (upstream.go,
// upstream_answer.go), and the answer is relayed; SSE on whole events only,
// and a cut answer ends visibly (h1_abort.go). The loop only hears of the
// session's start and end, as counts.
//
// # How a signal flows
//
// The signal side of the self-pipe (signals.go) writes the signal's number,
// one byte, and nothing more. The gateway's loop (gateway_loop.go) reads the
// bytes in order and feeds each to step (loop.go), which returns the new
// state and the effects (drain, hand over, reload, exit) as values; the
// loop carries them out on other goroutines and never waits on them. A
// frozen loop stops its heartbeat (mono.go), which the watchdog, /healthz
// and hermes restart all read.
package main
