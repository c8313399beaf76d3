// Package atomicfile writes small files so that a reader sees the old
// contents or the new, never a part: the data goes to PATH.tmp, which is
// renamed over PATH. A failed write (a full disk, say) removes PATH.tmp, so
// nothing is left behind; a process killed mid-write leaves PATH.tmp, which
// its next run may delete by that name.
package atomicfile

import "os"

// Write replaces the file at path with data (mode 0644, less the umask).
func Write(path string, data []byte) (err error) {
	tmp := path + ".tmp"
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
