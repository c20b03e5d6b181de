package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// The Telegram store: what makes "answered exactly once" survive a stop, a
// restart, a handoff, a crash and a reboot. It is one append-only file,
// <state_dir>/telegram/updates.jsonl, one JSON record per line:
//
//	acc    an update was accepted (the user's message: chat, from, text).
//	       Written and fsynced before the offset moves past it, and the
//	       offset is what acknowledges it to Telegram (the next getUpdates
//	       carries it): an update Telegram forgets is always on disk.
//	off    the next update id to ask for (with the acc records it covers).
//	claim  a gateway (pid, start time, boot id) began to answer an update.
//	       Another gateway leaves the update alone while that process
//	       lives: in a handoff both run for a while.
//	sent   part k of the reply is Telegram message m. A re-run edits m
//	       instead of sending a second reply.
//	done   the reply is complete (its text, for the chat's history).
//
// Both gateways of a handoff append to the file (O_APPEND, one write per
// batch of records, so lines never interleave) and read it again to see
// the other's progress. Only a gateway that knows it is the only writer
// compacts it (a fresh start, or a successor once its predecessor is gone):
// the compacted file keeps the offset, every update not done, and the last
// telegram.history_turns turns of each chat.
//
// The one window left: a crash after Telegram took a sendMessage and before
// its sent record is on disk. The next gateway then sends that reply again
// (once). The record is written the moment the answer arrives, so the
// window is one fsync wide.

type tgRecord struct {
	T     string `json:"t"`
	U     int64  `json:"u,omitempty"`    // update id
	Chat  int64  `json:"chat,omitempty"` // chat id
	From  int64  `json:"from,omitempty"` // user id (acc)
	Msg   int64  `json:"msg,omitempty"`  // acc: the user's message id; sent: the bot's
	Part  int    `json:"part,omitempty"` // sent: which part of a long reply
	Text  string `json:"text,omitempty"` // acc: the user's text; done: the reply
	Err   bool   `json:"err,omitempty"`  // done: the reply is an error notice, kept out of the history
	Off   int64  `json:"off,omitempty"`  // off
	PID   int    `json:"pid,omitempty"`  // claim
	Start uint64 `json:"start,omitempty"`
	Boot  string `json:"boot,omitempty"`
}

// tgUpdateState is one accepted update and how far its answer got.
type tgUpdateState struct {
	acc   tgRecord
	claim *tgRecord
	sent  map[int]int64 // part -> the bot's message id
	done  *tgRecord
}

// tgState is the store replayed.
type tgState struct {
	offset int64
	ups    map[int64]*tgUpdateState
	order  []int64 // update ids, ascending
}

func (st *tgState) apply(r tgRecord) {
	switch r.T {
	case "off":
		st.offset = max(st.offset, r.Off)
	case "acc":
		if _, ok := st.ups[r.U]; ok {
			return
		}
		st.ups[r.U] = &tgUpdateState{acc: r, sent: map[int]int64{}}
		if n := len(st.order); n == 0 || st.order[n-1] < r.U {
			st.order = append(st.order, r.U)
		} else {
			i, _ := slices.BinarySearch(st.order, r.U)
			st.order = slices.Insert(st.order, i, r.U)
		}
	case "claim", "sent", "done":
		u := st.ups[r.U]
		if u == nil {
			return
		}
		switch r.T {
		case "claim":
			c := r
			u.claim = &c
		case "sent":
			u.sent[r.Part] = r.Msg
		case "done":
			d := r
			u.done = &d
		}
	}
}

// history is the chat's last n answered turns before update before.
func (st *tgState) history(chat, before int64, n int) []*tgUpdateState {
	var out []*tgUpdateState
	for i := len(st.order) - 1; i >= 0 && len(out) < n; i-- {
		id := st.order[i]
		u := st.ups[id]
		if id >= before || u.acc.Chat != chat || u.done == nil || u.done.Err {
			continue
		}
		out = append(out, u)
	}
	slices.Reverse(out)
	return out
}

// pending is every accepted update not answered yet, in order.
func (st *tgState) pending() []*tgUpdateState {
	var out []*tgUpdateState
	for _, id := range st.order {
		if u := st.ups[id]; u.done == nil {
			out = append(out, u)
		}
	}
	return out
}

// tgFile is what the store needs of its file (an *os.File): a test
// stands a wrapper in that counts its syncs or fails them.
type tgFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
	Close() error
}

type tgStore struct {
	mu   sync.Mutex
	path string
	f    tgFile
	size int64 // bytes this process knows the file holds (its own appends)
	torn bool  // the last append left a torn line it could not cut off
}

func tgStorePath(stateDir string) string {
	return filepath.Join(stateDir, "telegram", "updates.jsonl")
}

func openTgStore(stateDir string) (*tgStore, error) {
	path := tgStorePath(stateDir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s := &tgStore{path: path, f: f}
	if fi, err := f.Stat(); err == nil {
		s.size = fi.Size()
	}
	return s, nil
}

// append writes records in one write and makes them durable.
func (s *tgStore) append(recs ...tgRecord) error {
	var b bytes.Buffer
	for _, r := range recs {
		line, _ := json.Marshal(r)
		b.Write(line)
		b.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.torn {
		// The last append failed halfway and could not be cut off: end
		// its torn line first, so that replay skips it alone.
		b2 := append([]byte{'\n'}, b.Bytes()...)
		b.Reset()
		b.Write(b2)
	}
	var end int64 = -1 // the file's size before this append
	if st, err := s.f.Stat(); err == nil {
		end = st.Size()
	}
	n, err := s.f.Write(b.Bytes())
	s.size += int64(n)
	if err != nil {
		// A write cut short (ENOSPC halfway) leaves a torn line, which the
		// next record would be appended to: cut it off again, if the file
		// holds nothing after it but this write's part.
		if n > 0 {
			st, serr := s.f.Stat()
			if end >= 0 && serr == nil && st.Size() == end+int64(n) && s.f.Truncate(end) == nil {
				s.size -= int64(n)
			} else {
				s.torn = true
			}
		}
		return fmt.Errorf("writing %s: %w", s.path, err)
	}
	s.torn = false
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", s.path, err)
	}
	return nil
}

// load replays the file. A torn last line (a crash mid-write) is skipped:
// its records were never acknowledged to anyone.
func (s *tgStore) load() (*tgState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked()
}

func (s *tgStore) loadLocked() (*tgState, error) {
	st := &tgState{ups: map[int64]*tgUpdateState{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r tgRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			st.apply(r)
		}
	}
	return st, nil
}

// compact rewrites the file with what still matters, atomically, and
// returns the state it holds. The store's lock is held from the read to
// the rename, so no record appended meanwhile is lost. Only the store's
// one writer process may call it (another process's appends would go to
// the file it replaces).
func (s *tgStore) compact(historyTurns int) (*tgState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.loadLocked()
	if err != nil {
		return nil, err
	}
	keep := map[int64]bool{}
	perChat := map[int64]int{}
	for i := len(st.order) - 1; i >= 0; i-- {
		u := st.ups[st.order[i]]
		if u.done == nil {
			keep[u.acc.U] = true
			continue
		}
		if !u.done.Err && perChat[u.acc.Chat] < historyTurns {
			perChat[u.acc.Chat]++
			keep[u.acc.U] = true
		}
	}
	var b bytes.Buffer
	put := func(r tgRecord) {
		line, _ := json.Marshal(r)
		b.Write(line)
		b.WriteByte('\n')
	}
	put(tgRecord{T: "off", Off: st.offset})
	kept := &tgState{offset: st.offset, ups: map[int64]*tgUpdateState{}}
	for _, id := range st.order {
		if !keep[id] {
			continue
		}
		u := st.ups[id]
		kept.ups[id], kept.order = u, append(kept.order, id)
		put(u.acc)
		if u.claim != nil && u.done == nil {
			put(*u.claim)
		}
		for part, m := range u.sent {
			put(tgRecord{T: "sent", U: id, Part: part, Msg: m})
		}
		if u.done != nil {
			put(*u.done)
		}
	}
	if err := writeFileAtomic(s.path, b.Bytes(), 0o600); err != nil {
		return st, err
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return st, err
	}
	s.f.Close()
	s.f, s.size = f, int64(b.Len())
	return kept, nil
}

// written is the file's size as far as this process knows: what it read
// at open, its appends, its compactions. It costs no system call: the
// dispatcher asks on every turn.
func (s *tgStore) written() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

func (s *tgStore) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.Close()
}
