package main

import (
	"os"
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
