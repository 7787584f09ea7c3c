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
		stale := now - Skew.Milliseconds()
		var oldest [32]byte
		first := true
		for m, t := range s.at {
			switch {
			case t < stale:
				delete(s.at, m) // too old to pass Open anyway
			case first || t < s.at[oldest]:
				oldest, first = m, false
			}
		}
		if len(s.at) >= MaxSeen {
			s.floor = max(s.floor, s.at[oldest])
			delete(s.at, oldest)
		}
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
