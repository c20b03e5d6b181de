package main

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestTgStoreReplayAndCompact: the store replays to the same state after a
// compaction, which keeps the offset, every update not done (with its
// claim and its reply messages) and the last history_turns turns of each
// chat, and a torn last line (a crash mid-write) is skipped.
func TestTgStoreReplayAndCompact(t *testing.T) {
	dir := t.TempDir()
	s, err := openTgStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var recs []tgRecord
	for u := int64(1); u <= 5; u++ { // chat 7: five answered turns
		recs = append(recs, tgRecord{T: "acc", U: u, Chat: 7, From: 1, Msg: 100 + u, Text: "q"},
			tgRecord{T: "sent", U: u, Msg: 200 + u}, tgRecord{T: "done", U: u, Text: "a"})
	}
	recs = append(recs,
		tgRecord{T: "acc", U: 6, Chat: 7, Msg: 106, Text: "error turn"}, tgRecord{T: "done", U: 6, Text: "sorry", Err: true},
		tgRecord{T: "acc", U: 7, Chat: 8, Msg: 107, Text: "pending"}, tgRecord{T: "claim", U: 7, PID: 42},
		tgRecord{T: "sent", U: 7, Part: 0, Msg: 301}, tgRecord{T: "sent", U: 7, Part: 1, Msg: 302},
		tgRecord{T: "off", Off: 8})
	if err := s.append(recs...); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(tgStorePath(dir), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"t":"acc","u":9,"chat":`) // torn
	f.Close()

	check := func(st *tgState, wantTurns int) {
		t.Helper()
		if st.offset != 8 {
			t.Errorf("offset %d, want 8", st.offset)
		}
		p := st.pending()
		if len(p) != 1 || p[0].acc.U != 7 || p[0].claim == nil || p[0].claim.PID != 42 || p[0].sent[0] != 301 || p[0].sent[1] != 302 {
			t.Errorf("pending %+v", p)
		}
		h := st.history(7, 100, 3)
		if len(h) != 3 || h[0].acc.U != 3 || h[2].acc.U != 5 {
			t.Errorf("history: %d turns", len(h))
		}
		n := 0
		for _, id := range st.order {
			if st.ups[id].acc.Chat == 7 && st.ups[id].done != nil && !st.ups[id].done.Err {
				n++
			}
		}
		if n != wantTurns {
			t.Errorf("%d turns of chat 7 kept, want %d", n, wantTurns)
		}
	}
	st, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	check(st, 5)
	kept, err := s.compact(3)
	if err != nil {
		t.Fatal(err)
	}
	check(kept, 3)
	again, _ := s.load()
	check(again, 3)
	if _, ok := again.ups[6]; ok {
		t.Errorf("an error notice was kept as history")
	}
	// Appends after a compaction go to the new file.
	s.append(tgRecord{T: "done", U: 7, Text: "finally"})
	if st, _ := s.load(); len(st.pending()) != 0 {
		t.Errorf("the append after the compaction was lost")
	}
}

// syncCountingFile is the store's file with its calls recorded, and a
// Sync that fails when syncErr is set.
type syncCountingFile struct {
	tgFile
	calls   []string
	syncErr error
}

func (f *syncCountingFile) Write(p []byte) (int, error) {
	f.calls = append(f.calls, "write")
	return f.tgFile.Write(p)
}

func (f *syncCountingFile) Sync() error {
	f.calls = append(f.calls, "sync")
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.tgFile.Sync()
}

// TestTgStoreAppendSyncs: an append is durable before it returns (its
// write, then a sync), and an append whose sync fails is no record: the
// updates it held are not accepted and the offset does not move past
// them, so Telegram sends them again.
func TestTgStoreAppendSyncs(t *testing.T) {
	dir := t.TempDir()
	s, err := openTgStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	f := &syncCountingFile{tgFile: s.f}
	s.f = f
	if err := s.append(tgRecord{T: "acc", U: 1, Chat: 7, Msg: 1, Text: "q"}, tgRecord{T: "off", Off: 2}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"write", "sync"}) {
		t.Fatalf("append made %v; want [write sync]", f.calls)
	}

	f.syncErr = errors.New("input/output error")
	b := &telegramBot{store: s}
	p := defaultPolicy()
	p.Telegram.AllowedUsers = []int64{1}
	st, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	ups := []tgUpdate{{UpdateID: 2, Message: &tgMessage{MessageID: 5, From: &tgUser{ID: 1}, Chat: tgChat{ID: 7}, Text: "next"}}}
	if err := b.accept(p, st, ups); err == nil || !strings.Contains(err.Error(), "syncing") {
		t.Fatalf("accept with a failing sync: %v; want the sync's error", err)
	}
	if st.offset != 2 || st.ups[2] != nil {
		t.Fatalf("after a failed sync: offset %d, update 2 accepted %v; want offset 2, not accepted", st.offset, st.ups[2] != nil)
	}
}

// TestTgStoreReplayKeepsFirstAcc: an update accepted twice (a poll that
// saw it again before its offset was written) is the first acceptance:
// the claim and the reply message ids recorded after it survive the
// second, so a re-run edits the reply it sent instead of sending another.
func TestTgStoreReplayKeepsFirstAcc(t *testing.T) {
	dir := t.TempDir()
	s, err := openTgStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.append(tgRecord{T: "acc", U: 7, Chat: 3, Msg: 70, Text: "q"}, tgRecord{T: "claim", U: 7, PID: 42},
		tgRecord{T: "sent", U: 7, Part: 0, Msg: 900}, tgRecord{T: "acc", U: 7, Chat: 3, Msg: 70, Text: "q"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	p := st.pending()
	if len(p) != 1 || p[0].claim == nil || p[0].claim.PID != 42 || p[0].sent[0] != 900 {
		t.Fatalf("pending after a repeated acc: %d updates, %+v; want update 7 with its claim (pid 42) and sent message 900", len(p), p)
	}
	if !slices.Equal(st.order, []int64{7}) {
		t.Fatalf("order %v; want [7]", st.order)
	}
}
