package overlaytest

import (
	"math/bits"
	"slices"
)

// queue is the clock's events in (when, seq) order: a calendar queue. Time
// is cut into buckets of 2^bucketShift ns; a ring of nBuckets of them
// holds the events of the next quarter second unsorted, and a bucket is
// sorted only when its turn comes. Events further out wait in a heap
// (far), and move into the ring as it turns. A simulated network keeps
// millions of packets in flight, all due within a few buckets' width of
// each other: a binary heap of them took some twenty cache misses a
// packet, the ring takes an append and a share of one small sort.
//
// The invariant, with cur the sorted bucket being run and num(e) =
// e.when>>bucketShift:
//   - cur[pos:] holds the events with num ≤ curNum, sorted;
//   - buckets[k & bucketMask] those with num == k, for curNum < k <
//     curNum+nBuckets, unsorted;
//   - far those with num ≥ curNum+nBuckets, a min-heap.
//
// So every event in cur comes before every event elsewhere, and an event
// scheduled into the past of curNum (the clock may lag behind a bucket
// that was peeked at) goes into cur at its sorted place.
type queue struct {
	cur     []event
	pos     int
	curNum  int64
	buckets [][]event // nBuckets, allocated on first use
	full    [nBuckets / 64]uint64
	ring    int // events in buckets
	far     []event
	spare   [][]event // empty arrays for buckets, so that a bucket's first event does not allocate
	spareN  int       // their capacity in events
}

const (
	bucketShift = 16 // 65.536 µs
	nBuckets    = 1 << 12
	bucketMask  = nBuckets - 1
	// minSpare is the capacity in events that spare may hold whatever the
	// queue's length; beyond it, no more than the queue holds, so that a
	// burst leaves no high-water mark of arrays behind.
	minSpare = 1 << 16
)

func before(a, b *event) bool { return a.when < b.when || a.when == b.when && a.seq < b.seq }

func cmpEvent(a, b event) int {
	switch {
	case a.when < b.when:
		return -1
	case a.when > b.when:
		return 1
	case a.seq < b.seq:
		return -1
	case a.seq > b.seq:
		return 1
	}
	return 0
}

// len is the number of events queued, stale ones included.
func (q *queue) len() int { return len(q.cur) - q.pos + q.ring + len(q.far) }

func (q *queue) push(e event) {
	num := e.when >> bucketShift
	switch {
	case num <= q.curNum:
		q.insertCur(e)
	case num < q.curNum+nBuckets:
		if q.buckets == nil {
			q.buckets = make([][]event, nBuckets)
		}
		b := num & bucketMask
		if q.buckets[b] == nil && len(q.spare) > 0 {
			q.buckets[b] = q.spare[len(q.spare)-1]
			q.spare = q.spare[:len(q.spare)-1]
			q.spareN -= cap(q.buckets[b])
		}
		q.buckets[b] = append(q.buckets[b], e)
		q.full[b/64] |= 1 << (b % 64)
		q.ring++
	default:
		q.far = append(q.far, e)
		q.farUp(len(q.far) - 1)
	}
}

// insertCur puts e at its place in cur[pos:], shifting whichever side of
// it is shorter (the consumed space before pos takes the left shift).
func (q *queue) insertCur(e event) {
	rest := q.cur[q.pos:]
	i, _ := slices.BinarySearchFunc(rest, e, cmpEvent)
	if q.pos > 0 && i < len(rest)-i {
		q.pos--
		copy(q.cur[q.pos:], rest[:i])
		q.cur[q.pos+i] = e
		return
	}
	q.cur = slices.Insert(q.cur, q.pos+i, e)
}

// peek is the earliest event, or nil if none is queued.
func (q *queue) peek() *event {
	for q.pos == len(q.cur) {
		if !q.turn() {
			return nil
		}
	}
	return &q.cur[q.pos]
}

// pop removes the event peek returned.
func (q *queue) pop() { q.pos++ }

// turn moves cur to the next bucket that holds events, and sorts it. It
// reports false if no event is queued.
func (q *queue) turn() bool {
	switch {
	case q.ring > 0:
		q.curNum += int64(q.nextFull((q.curNum + 1) & bucketMask))
	case len(q.far) > 0:
		q.curNum = q.far[0].when >> bucketShift
	default:
		return false
	}
	old := q.cur[:0]
	q.cur, q.pos = nil, 0
	if q.buckets != nil {
		b := q.curNum & bucketMask
		q.cur, q.buckets[b] = q.buckets[b], nil
		q.full[b/64] &^= 1 << (b % 64)
		q.ring -= len(q.cur)
	}
	switch {
	case q.cur == nil:
		q.cur = old
	case cap(old) > 0 && q.spareN+cap(old) <= max(minSpare, q.len()):
		q.spare = append(q.spare, old)
		q.spareN += cap(old)
	}
	// What the ring's turn brought within reach.
	for len(q.far) > 0 && q.far[0].when>>bucketShift < q.curNum+nBuckets {
		e := q.far[0]
		q.farPop()
		if e.when>>bucketShift == q.curNum {
			q.cur = append(q.cur, e)
		} else {
			q.push(e)
		}
	}
	slices.SortFunc(q.cur, cmpEvent)
	return true
}

// nextFull is the distance from bucket index from (≥ 1 away from curNum's)
// to the next full bucket, plus one: the step from curNum. The ring must
// hold an event.
func (q *queue) nextFull(from int64) int {
	w := from / 64
	word := q.full[w] &^ (1<<(from%64) - 1)
	for k := 0; ; k++ {
		if word != 0 {
			i := w*64 + int64(bits.TrailingZeros64(word))
			return int((i-from)&bucketMask) + 1
		}
		w = (w + 1) % (nBuckets / 64)
		word = q.full[w]
		if k > nBuckets/64 {
			panic("overlaytest: calendar ring empty")
		}
	}
}

// each calls f with every queued event, in no order; f may change the
// event's ref but not its time.
func (q *queue) each(f func(*event)) {
	for i := q.pos; i < len(q.cur); i++ {
		f(&q.cur[i])
	}
	for _, b := range q.buckets {
		for i := range b {
			f(&b[i])
		}
	}
	for i := range q.far {
		f(&q.far[i])
	}
}

// The far heap, hand-written: container/heap would box every event.

func (q *queue) farUp(i int) {
	h := q.far
	for i > 0 {
		p := (i - 1) / 2
		if !before(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *queue) farPop() {
	h := q.far
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	q.far = h
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		j := l
		if r := l + 1; r < len(h) && before(&h[r], &h[l]) {
			j = r
		}
		if !before(&h[j], &h[i]) {
			break
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}
