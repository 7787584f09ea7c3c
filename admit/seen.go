package admit

// MaxSeen is how many hellos a proxy remembers having taken. Each newcomer
// says hello about once a second, to one proxy at a time, so this holds the
// last two minutes (Skew) of 8 newcomers at once. About 100 kB.
const MaxSeen = 1024

// Seen are the hellos a proxy took that are still fresh, by MAC, so that it
// takes each once. When it is full, the oldest is forgotten and the floor
// rises to its time: no hello sent then or before is taken any more, so a
// forgotten one cannot come back. (Hellos dated ahead are bounded by Ahead,
// so a flood of them cannot raise the floor past genuine ones for long.)
type Seen struct {
	at    map[[32]byte]int64 // MAC → when the hello was sent, Unix ms
	floor int64
}

// Take reports whether the hello with this MAC, sent at (Unix ms), is new,
// and remembers it. now is the receiver's wall clock, Unix ms.
func (s *Seen) Take(mac [32]byte, at, now int64) bool {
	if at <= s.floor {
		return false
	}
	if _, ok := s.at[mac]; ok {
		return false
	}
	if s.at == nil {
		s.at = map[[32]byte]int64{}
	}
	if len(s.at) >= MaxSeen {
		s.floor = makeRoom(s.at, MaxSeen, s.floor, now)
		if at <= s.floor {
			return false
		}
	}
	s.at[mac] = at
	return true
}

// Floor is the time (Unix ms) at or before which no hello is taken.
func (s *Seen) Floor() int64 { return s.floor }

// Len is how many hellos it remembers.
func (s *Seen) Len() int { return len(s.at) }

// MaxLatest bounds Latest: one entry a key whose certificate verified.
const MaxLatest = 1 << 16

// Latest is a proxy's replay memory of certificate hellos: when it last
// took a hello from each key. A hello is taken only if it is dated later
// than the last one taken from its key, so a replay, or a copy sent from
// elsewhere, never is; each node's hellos are its own, and nobody else's
// (not even a flood of them dated ahead) can push them out. The proxy
// keeps only keys whose certificates it verified. When it is full, keys
// not heard from within Skew go first (their hellos are stale anyway),
// then the oldest, and the floor rises to its time.
type Latest struct {
	at    map[[32]byte]int64 // key → when its last hello taken was sent, Unix ms
	floor int64
}

// Take reports whether a hello from key, sent at (Unix ms), is new, and
// remembers it. now is the receiver's wall clock, Unix ms.
func (l *Latest) Take(key [32]byte, at, now int64) bool {
	last, known := l.at[key]
	if at <= l.floor || (known && at <= last) {
		return false
	}
	if l.at == nil {
		l.at = map[[32]byte]int64{}
	}
	if !known && len(l.at) >= MaxLatest {
		l.floor = makeRoom(l.at, MaxLatest, l.floor, now)
		if at <= l.floor {
			return false
		}
	}
	l.at[key] = at
	return true
}

// makeRoom frees a place in m, a memory of hellos' dates (Unix ms) that
// holds at most most: first the stale ones (Open refuses them anyway),
// then, if none was, the oldest, whose date becomes the floor. It returns
// the floor.
func makeRoom(m map[[32]byte]int64, most int, floor, now int64) int64 {
	stale := now - Skew.Milliseconds()
	var oldest [32]byte
	first := true
	for k, t := range m {
		switch {
		case t < stale:
			delete(m, k)
		case first || t < m[oldest]:
			oldest, first = k, false
		}
	}
	if len(m) >= most {
		floor = max(floor, m[oldest])
		delete(m, oldest)
	}
	return floor
}
