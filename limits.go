package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// The memory guard ([limits], off by default): while the gateway's RSS
// stays above limits.max_rss for limits.max_rss_window, it restarts the way
// a planned restart does, without cutting a session: a handoff where one
// can run (the successor starts small; this gateway drains what it has),
// else a drain restart (USR1: exit 75, and the service manager starts a
// fresh one). It journals why, and alerts. PM2's max_memory_restart, done
// without cutting a session.

// memoryGuard samples the RSS off the loop until done.
func (g *gateway) memoryGuard(done <-chan struct{}) {
	p := g.policy.Load()
	if p.Limits.MaxRSS == 0 {
		return
	}
	if _, ok := residentBytes(); !ok {
		g.log.warn(evMemoryLimit, "note", "limits.max_rss is set, but this system does not tell hermes its RSS: the memory guard is off")
		return
	}
	go func() {
		var above time.Time // since when the RSS has been above the limit
		for {
			p := g.policy.Load()
			every := min(max(p.Limits.MaxRSSWindow/10, 100*time.Millisecond), 5*time.Second)
			t := time.NewTimer(every)
			select {
			case <-done:
				t.Stop()
				return
			case <-t.C:
			}
			rss, _ := residentBytes()
			if p.Limits.MaxRSS == 0 || rss <= p.Limits.MaxRSS {
				above = time.Time{}
				continue
			}
			if above.IsZero() {
				above = time.Now()
			}
			if time.Since(above) < p.Limits.MaxRSSWindow || g.snap.Load().State != stateServing {
				continue
			}
			g.memoryRestart(p, rss)
			above = time.Time{}
			// One restart per episode: the next gateway watches its own.
			return
		}
	}()
}

// memoryRestart asks the loop for a handoff, and for a drain restart if a
// handoff cannot run.
func (g *gateway) memoryRestart(p *Policy, rss int64) {
	mib := fmt.Sprintf("%.1fMiB", float64(rss)/(1<<20))
	g.log.warn(evMemoryLimit, "rss", mib, "max_rss", formatSize(p.Limits.MaxRSS), "window", p.Limits.MaxRSSWindow, "action", "planned restart")
	g.alerts.fire("memory_limit", "", fmt.Sprintf("hermes %q on %s: the gateway's memory (%s) stayed above limits.max_rss (%s) for %s; it restarts without cutting a session",
		p.Name, g.alerts.hostName(), mib, formatSize(p.Limits.MaxRSS), p.Limits.MaxRSSWindow), "rss_bytes", rss, "max_rss_bytes", p.Limits.MaxRSS)
	ans, _ := g.askHandoff("the memory guard", handoffWait(p))
	if strings.HasPrefix(ans, "ok") {
		return
	}
	select {
	case <-g.done:
		return // stopping anyway
	default:
	}
	g.log.warn(evMemoryLimit, "action", "drain restart", "note", "no handoff: "+ans)
	syscall.Kill(os.Getpid(), syscall.SIGUSR1) // through the self-pipe, like every signal
}
