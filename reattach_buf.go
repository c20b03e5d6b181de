package main

// A stream's events (reattach.go), kept in pooled blocks of one size: a
// stream that grows never copies what it has, and a stream removed gives
// its blocks back for the next one, so a gateway at a steady load
// allocates nothing for its streams' events.

// streamBlock is a block's size: a buffer class of body.go's pool.
const streamBlock = 4 << 10

// blockBuf is bytes appended in blocks. The bytes of a block never change
// once written, so a slice of one (seg) stays valid while the buffer
// grows; only free takes them back, and a stream frees its buffer only
// once nobody writes from it (liveStream.pins).
type blockBuf struct {
	blocks []*[]byte // each of cap streamBlock, filled in order
	n      int
}

func (b *blockBuf) len() int { return b.n }

// capBytes is the memory the blocks hold.
func (b *blockBuf) capBytes() int { return len(b.blocks) * streamBlock }

// write appends p.
func (b *blockBuf) write(p []byte) {
	for len(p) > 0 {
		if b.n == len(b.blocks)*streamBlock {
			blk := getBuf(streamBlock)
			*blk = (*blk)[:0]
			b.blocks = append(b.blocks, blk)
		}
		last := b.blocks[len(b.blocks)-1]
		k := copy((*last)[len(*last):cap(*last)], p)
		*last = (*last)[:len(*last)+k]
		b.n += k
		p = p[k:]
	}
}

// seg is the bytes from off to the end of off's block (or of the
// buffer): empty at the end.
func (b *blockBuf) seg(off int) []byte {
	if off >= b.n {
		return nil
	}
	blk := *b.blocks[off/streamBlock]
	return blk[off%streamBlock:]
}

// appendTo appends the bytes from off on to dst.
func (b *blockBuf) appendTo(dst []byte, off int) []byte {
	for s := b.seg(off); len(s) > 0; s = b.seg(off) {
		dst = append(dst, s...)
		off += len(s)
	}
	return dst
}

// free gives the blocks back to the pool.
func (b *blockBuf) free() {
	for _, blk := range b.blocks {
		putBuf(blk)
	}
	clear(b.blocks)
	b.blocks, b.n = b.blocks[:0], 0
}

// drop forgets the blocks without giving them back: someone may still
// write from them (the collector takes them after).
func (b *blockBuf) drop() { b.blocks, b.n = nil, 0 }
