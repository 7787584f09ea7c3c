package overlay

import (
	"cmp"

	"github.com/pias-net/pias/router"
)

// RAPs returns the rendezvous proxies of g: the k proxies, by name, with the
// highest rendezvous (HRW) weight for g among proxies, highest first. Ties
// are broken by name, lowest first; duplicate names count once. With k
// larger than the number of distinct proxies it returns all of them; with k
// ≤ 0 it returns nil. It allocates only the result.
//
// The weight depends only on g and the name, so every process on every
// platform computes the same RAPs from the same set of live proxies, and
// removing a proxy moves only the groups that had it among their k RAPs.
func RAPs(g router.Group, proxies []string, k int) []string {
	if k <= 0 || len(proxies) == 0 {
		return nil
	}
	k = min(k, len(proxies))
	top := make([]string, 0, k)
	var wbuf [16]uint64
	ws := wbuf[:0]
	if k > len(wbuf) {
		ws = make([]uint64, 0, k)
	}
	h := groupHash(g)
	for _, p := range proxies {
		w := weight(h, p)
		// i is where p goes: after every entry that outranks it.
		i := len(top)
		for i > 0 && ranksBefore(w, p, ws[i-1], top[i-1]) {
			i--
		}
		if i > 0 && ws[i-1] == w && top[i-1] == p {
			continue // a duplicate name
		}
		if i == k {
			continue // outranked by k others
		}
		if len(top) < k {
			top = append(top, "")
			ws = append(ws, 0)
		}
		copy(top[i+1:], top[i:])
		copy(ws[i+1:], ws[i:])
		top[i], ws[i] = p, w
	}
	return top
}

// ranksBefore reports whether weight w of proxy p ranks strictly before
// weight v of proxy q.
func ranksBefore(w uint64, p string, v uint64, q string) bool {
	if w != v {
		return w > v
	}
	return cmp.Less(p, q)
}

// FNV-1a 64.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnvAdd continues the FNV-1a 64 state h over b: the one hash of the
// control plane (RAPs, watchers, helpers, digests, seeds).
func fnvAdd[T string | []byte](h uint64, b T) uint64 {
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i])
		h *= fnvPrime
	}
	return h
}

// fold32 folds a 64-bit hash into 32 bits (digests on the wire).
func fold32(h uint64) uint32 { return uint32(h ^ h>>32) }

// groupHash is the FNV-1a 64 state after the canonical bytes of g: its
// address as on the wire (family 4 or 6 then the address, IPv4-mapped
// addresses unmapped, zone ignored), port big-endian, and protocol.
func groupHash(g router.Group) uint64 {
	var b [1 + 16 + 3]byte
	n := 1
	a := g.Addr.Unmap()
	switch {
	case a.Is4():
		b[0] = 4
		a4 := a.As4()
		n += copy(b[1:], a4[:])
	case a.Is6():
		b[0] = 6
		a16 := a.As16()
		n += copy(b[1:], a16[:])
	}
	b[n], b[n+1], b[n+2] = byte(g.Port>>8), byte(g.Port), g.Proto
	return fnvAdd(uint64(fnvOffset), b[:n+3])
}

// weight is the HRW weight of a proxy for the group whose groupHash is h:
// FNV-1a 64 continued over the name, finished with splitmix64's mixer so
// that every bit of the input moves every bit of the weight.
func weight(h uint64, name string) uint64 {
	h = fnvAdd(h, name)
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
