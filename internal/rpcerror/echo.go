package rpcerror

import (
	"strconv"
	"unicode/utf8"
)

// Bounds on what a status may carry. Validation runs before anything is
// sent upstream, so any caller can make the gateway describe any input:
// without these, a 30 MB field came back as a 30 MB message, a 30 MB
// BadRequest and a 30 MB log line, and tore down the caller's connection
// (trailers are headers, and HTTP/2 peers cap their size).
const (
	// maxEcho is the longest caller value a status repeats whole; longer
	// values are cut to echoPrefix runes and their true length.
	maxEcho    = 64
	echoPrefix = 24
	// maxField and maxDescription bound one BadRequest violation.
	maxField       = 160
	maxDescription = 400
	// maxViolations is how many violations a BadRequest lists; a last
	// entry counts the rest.
	maxViolations = 32
	// maxListed is how many violations the status message spells out.
	maxListed = 6
	// maxMessage bounds a status message.
	maxMessage = 1024
)

// Quote returns s quoted for a status message or a field name: whole when it
// is short, otherwise its first few characters and its true length, so that
// an error never repeats a caller's input at full size.
func Quote(s string) string {
	if len(s) <= maxEcho && utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	prefix := s
	for i, n := 0, 0; i < len(s); n++ {
		if n == echoPrefix {
			prefix = s[:i]
			break
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if len(prefix) > maxEcho {
		prefix = prefix[:maxEcho]
	}
	return strconv.Quote(prefix) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
