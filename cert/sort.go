package cert

import "slices"

// sortUnique sorts a copy of s and drops duplicates.
func sortUnique[T any](s []T, cmp func(a, b T) int) []T {
	s = slices.Clone(s)
	slices.SortFunc(s, cmp)
	return slices.CompactFunc(s, func(a, b T) bool { return cmp(a, b) == 0 })
}

// strictlySorted reports whether s is sorted with no duplicates: the only
// order the parsers accept.
func strictlySorted[T any](s []T, cmp func(a, b T) int) bool {
	for i := 1; i < len(s); i++ {
		if cmp(s[i-1], s[i]) >= 0 {
			return false
		}
	}
	return true
}
