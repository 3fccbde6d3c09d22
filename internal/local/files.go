package local

import (
	"os"
	"path/filepath"
	"strings"
)

// writeFile writes atomically, so a crash never leaves half a file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// logTail returns the last lines of a log file, indented.
func logTail(file string, lines int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return "  (no log)"
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "  " + strings.Join(all, "\n  ")
}
