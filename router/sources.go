package router

// A flow table counts each shard's flows by source address: the client, at
// an IAP and at a JAP alike (a JAP's clients come through many IAPs, but
// keep their address). No source may hold more than 1/sourceShare of a
// table; one at its share makes room from its own flows. A full shard
// makes room from its heaviest source. So a client that floods new flows
// evicts its own, and never another client's while it holds more than
// that client does.
//
// A source's flows hash evenly over the shards, so the per-shard counts
// and caps stand for the table's within a few percent.

// sourceShare: one source may hold at most 1/sourceShare of a table.
const sourceShare = 4

// SourceChurn is how many new flows a second a source at its share may
// make in a table, each evicting one of its own; past it (and a second's
// worth of burst) its new flows are dropped. A client that floods new
// flows would otherwise make the proxy forward every one to a target and
// carry the answer back: dropping them at once leaves the proxy the CPU
// to keep up with everyone else's packets.
const SourceChurn = 1024

// source is one source address's flows in a shard: how many, a circular
// list of them through sprev and snext (oldest first, roughly: eviction
// rotates it), and its place in the shard's heap. Guarded by the shard's
// lock.
type source struct {
	addr [16]byte
	n    int
	head *flow
	hi   int   // index in sources.heap
	tat  int64 // when its churn, at the table's pace, is paid off (GCRA)
}

// mayChurn reports whether src, at its share, may evict one of its flows
// for a new one at now, one every `every` ns with a second of burst, and
// counts it if so.
func (src *source) mayChurn(now, every int64) bool {
	tat := max(src.tat, now)
	if tat-now > int64(1e9) {
		return false
	}
	src.tat = tat + every
	return true
}

// sources is a shard's sources: by address, and in a max-heap by flow
// count, so that the heaviest is at heap[0].
type sources struct {
	m    map[[16]byte]*source
	heap []*source
}

// get returns the source of addr, or nil.
func (ss *sources) get(addr *[16]byte) *source { return ss.m[*addr] }

// add counts f, a new flow of the shard, under its source.
func (ss *sources) add(f *flow) {
	src := ss.m[f.key.src]
	if src == nil {
		if ss.m == nil {
			ss.m = make(map[[16]byte]*source)
		}
		src = &source{addr: f.key.src, hi: len(ss.heap)}
		ss.m[src.addr] = src
		ss.heap = append(ss.heap, src)
	}
	f.src = src
	if src.head == nil {
		f.sprev, f.snext = f, f
		src.head = f
	} else { // at the tail: before head
		tail := src.head.sprev
		f.sprev, f.snext = tail, src.head
		tail.snext, src.head.sprev = f, f
	}
	src.n++
	ss.up(src.hi)
}

// remove uncounts f, which leaves the shard.
func (ss *sources) remove(f *flow) {
	src := f.src
	if src == nil {
		return
	}
	if f.snext == f {
		src.head = nil
	} else {
		f.sprev.snext, f.snext.sprev = f.snext, f.sprev
		if src.head == f {
			src.head = f.snext
		}
	}
	f.src, f.sprev, f.snext = nil, nil, nil
	src.n--
	if src.n > 0 {
		ss.down(src.hi)
		return
	}
	last := len(ss.heap) - 1
	i := src.hi
	ss.swap(i, last)
	ss.heap[last] = nil
	ss.heap = ss.heap[:last]
	if i < last {
		ss.down(i)
		ss.up(i)
	}
	delete(ss.m, src.addr)
}

// heaviest returns the source with the most flows, and whether another
// has as many; nil when there are none.
func (ss *sources) heaviest() (src *source, tied bool) {
	if len(ss.heap) == 0 {
		return nil, false
	}
	src = ss.heap[0]
	for _, i := range [2]int{1, 2} { // the runner-up is a child of the root
		if i < len(ss.heap) && ss.heap[i].n == src.n {
			tied = true
		}
	}
	return src, tied
}

// oldest appends up to cap(out)−len(out) of src's flows from the head of
// its list, and moves the head past them: the next call sees others, so
// that flows an eviction spared go to the back.
func (src *source) oldest(out []*flow) []*flow {
	f := src.head
	for i := 0; i < src.n && len(out) < cap(out); i++ {
		out = append(out, f)
		f = f.snext
	}
	src.head = f
	return out
}

func (ss *sources) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if ss.heap[p].n >= ss.heap[i].n {
			return
		}
		ss.swap(i, p)
		i = p
	}
}

func (ss *sources) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(ss.heap) {
			return
		}
		if c+1 < len(ss.heap) && ss.heap[c+1].n > ss.heap[c].n {
			c++
		}
		if ss.heap[i].n >= ss.heap[c].n {
			return
		}
		ss.swap(i, c)
		i = c
	}
}

func (ss *sources) swap(i, j int) {
	h := ss.heap
	h[i], h[j] = h[j], h[i]
	h[i].hi, h[j].hi = i, j
}
