package remote

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
)

// writeFileScript writes stdin to $1 with mode $2, atomically: a temporary
// file in the same directory (mktemp creates it 0600, so the data is never
// readable by others before the chmod), checked to hold exactly $3 bytes (a
// connection lost mid-way ends stdin early: a short file must not replace the
// old one), flushed, then renamed over $1.
const writeFileScript = `set -e
p=$1 mode=$2 size=$3
mkdir -p -- "$(dirname -- "$p")"
t=$(mktemp -- "$p.kok-XXXXXX")
trap 'rm -f -- "$t"' EXIT
cat >"$t"
n=$(wc -c <"$t" | tr -d ' ')
if [ "$n" != "$size" ]; then
	echo "received $n of $size bytes" >&2
	exit 1
fi
chmod -- "$mode" "$t"
sync -- "$t" 2>/dev/null || :
mv -f -- "$t" "$p"
trap - EXIT
`

// WriteFile writes data to the absolute path on the host, as root, with mode
// (permission bits, setuid, setgid and sticky). It replaces the file
// atomically (a temporary file beside it renamed over it) and creates the
// parent directories. The data goes through the session's stdin, so any bytes
// are fine and they never appear in a command line.
func (c *Client) WriteFile(ctx context.Context, p string, data []byte, mode os.FileMode) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("writing %q on %s: want a clean absolute file path", p, c.addr)
	}
	unixMode, err := unixPerm(mode)
	if err != nil {
		return fmt.Errorf("writing %s on %s: %w", p, c.addr, err)
	}
	cmd := c.asRoot(strings.Join([]string{
		"/bin/sh", "-c", shellQuote(writeFileScript), "kok-write-file",
		shellQuote(p), fmt.Sprintf("%04o", unixMode), strconv.Itoa(len(data)),
	}, " "))
	res, err := c.exec(ctx, cmd, bytes.NewReader(data), false)
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("writing %s on %s: exit %d: %s", p, c.addr, res.ExitCode, res.StderrTail(512))
	}
	return nil
}

// unixPerm is mode as chmod takes it.
func unixPerm(mode os.FileMode) (uint32, error) {
	if mode&^(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		return 0, fmt.Errorf("mode %v: only permission bits, setuid, setgid and sticky make sense for a file", mode)
	}
	m := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		m |= 0o4000
	}
	if mode&os.ModeSetgid != 0 {
		m |= 0o2000
	}
	if mode&os.ModeSticky != 0 {
		m |= 0o1000
	}
	return m, nil
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
