//go:build !unix

package node

import "os"

// fileOwner: no uids here, and file modes do not say who may enter a
// directory, so CheckAdminDir checks only that it is a real directory.
func fileOwner(fi os.FileInfo) (int, bool) { return 0, false }
