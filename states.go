package main

// The gateway's lifecycle states and drain reasons: what the loop
// publishes and every reader of a gateway (its endpoints, status, restart,
// metrics) shares.

// gwState is the gateway's lifecycle state.
type gwState string

const (
	stateStarting gwState = "starting"
	stateServing  gwState = "serving"
	stateDraining gwState = "draining"
	stateStopping gwState = "stopping" // the loop has returned: closing down
)

// Drain reasons, sent to clients in the final SSE event so they know to
// reconnect, and logged as the exit reason.
const (
	reasonShutdown = "gateway_shutdown"
	reasonRestart  = "gateway_restart"
)
