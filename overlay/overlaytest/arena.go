package overlaytest

// arena holds the payloads of the packets in flight, end to end in chunks
// rather than one allocation each, so that they are no work for the
// collector. A chunk is reused once every packet in it has arrived or been
// dropped, which, packets arriving in about the order they were sent, is
// soon after it filled.
type arena struct {
	chunks []chunk
	cur    int32   // the chunk being filled; -1 for none
	warm   []int32 // empty chunks that kept their buffers
	cold   []int32 // empty chunks without buffers
}

type chunk struct {
	buf  []byte // never grown past its capacity: spans into it stay valid
	live int    // spans in it not yet released
}

// span is a payload in the arena.
type span struct {
	chunk    int32
	off, len uint32
}

const (
	chunkSize = 256 << 10
	// warmChunks is how many empty chunks keep their buffers: enough for
	// a steady run, not so many that a burst's stay.
	warmChunks = 8
)

// put copies b into the arena.
func (a *arena) put(b []byte) span {
	if len(a.chunks) == 0 {
		a.cur = -1
	}
	if a.cur < 0 || len(a.chunks[a.cur].buf)+len(b) > cap(a.chunks[a.cur].buf) {
		a.fresh(len(b))
	}
	c := &a.chunks[a.cur]
	s := span{chunk: a.cur, off: uint32(len(c.buf)), len: uint32(len(b))}
	c.buf = append(c.buf, b...)
	c.live++
	return s
}

// fresh makes a chunk with room for n bytes the current one.
func (a *arena) fresh(n int) {
	if old := a.cur; old >= 0 {
		a.cur = -1
		if a.chunks[old].live == 0 {
			a.free(old)
		}
	}
	var id int32
	switch {
	case n <= chunkSize && len(a.warm) > 0:
		id = a.warm[len(a.warm)-1]
		a.warm = a.warm[:len(a.warm)-1]
	case len(a.cold) > 0:
		id = a.cold[len(a.cold)-1]
		a.cold = a.cold[:len(a.cold)-1]
		a.chunks[id].buf = make([]byte, 0, max(chunkSize, n))
	default:
		id = int32(len(a.chunks))
		a.chunks = append(a.chunks, chunk{buf: make([]byte, 0, max(chunkSize, n))})
	}
	a.cur = id
}

func (a *arena) bytes(s span) []byte {
	return a.chunks[s.chunk].buf[s.off : s.off+s.len : s.off+s.len]
}

// release notes that s's packet has arrived or been dropped.
func (a *arena) release(s span) {
	c := &a.chunks[s.chunk]
	if c.live--; c.live == 0 && s.chunk != a.cur {
		a.free(s.chunk)
	}
}

func (a *arena) free(id int32) {
	c := &a.chunks[id]
	if len(a.warm) < warmChunks && cap(c.buf) == chunkSize {
		c.buf = c.buf[:0]
		a.warm = append(a.warm, id)
		return
	}
	c.buf = nil
	a.cold = append(a.cold, id)
}
