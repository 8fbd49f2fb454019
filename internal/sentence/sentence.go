// Package sentence splits long text into pieces for synthesis: each piece
// ends at a sentence boundary where one falls within the size limit, else at
// a clause boundary, else between words. It never splits inside a word, and
// a single word longer than the limit becomes a piece of its own.
package sentence

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Piece is one piece of the text.
type Piece struct {
	// Text is the piece, trimmed of surrounding white space.
	Text string
	// Start and End are the piece's position in the original text, in
	// characters (Unicode code points), End exclusive.
	Start, End int
}

// Split cuts text into pieces of at most max characters, packing whole
// sentences into each piece. Joined with spaces, the pieces hold every word
// of text, in order.
func Split(text string, max int) []Piece {
	var out []Piece
	rest, offset := text, 0
	for {
		// Skip white space before the next piece.
		trimmed := strings.TrimLeftFunc(rest, unicode.IsSpace)
		offset += utf8.RuneCountInString(rest[:len(rest)-len(trimmed)])
		rest = trimmed
		if rest == "" {
			return out
		}
		n := cut(rest, max)
		piece := strings.TrimRightFunc(rest[:n], unicode.IsSpace)
		chars := utf8.RuneCountInString(piece)
		out = append(out, Piece{Text: piece, Start: offset, End: offset + chars})
		offset += utf8.RuneCountInString(rest[:n])
		rest = rest[n:]
	}
}

// cut returns the byte length of the next piece of s, which starts with a
// non-space: the longest prefix of at most max characters that ends at the
// best kind of boundary found.
func cut(s string, max int) int {
	if utf8.RuneCountInString(s) <= max {
		return len(s)
	}
	var sentenceEnd, clauseEnd, wordEnd int // the last of each boundary within max
	chars := 0
	for i, r := range s {
		if chars == max {
			break
		}
		chars++
		next := i + utf8.RuneLen(r)
		prev := lastNonClosing(s[:next])
		if next < len(s) && !isSpace(s[next:]) && !isFullWidth(prev) {
			continue // a boundary needs white space after it, but for CJK punctuation
		}
		switch {
		case isSentenceEnd(prev):
			sentenceEnd = next
		case isClauseEnd(prev):
			clauseEnd = next
		}
		if !unicode.IsSpace(r) {
			wordEnd = next
		}
	}
	for _, b := range []int{sentenceEnd, clauseEnd, wordEnd} {
		if b > 0 {
			return b
		}
	}
	// One word longer than max: it stays whole.
	if i := strings.IndexFunc(s, unicode.IsSpace); i > 0 {
		return i
	}
	return len(s)
}

func isSpace(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}

// lastNonClosing returns the last rune of s, looking past closing quotes and
// brackets, so that `He said "stop."` ends a sentence at the quote.
func lastNonClosing(s string) rune {
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if !strings.ContainsRune(`"')]}»”’`, r) {
			return r
		}
		s = s[:len(s)-size]
	}
	return 0
}

func isSentenceEnd(r rune) bool { return strings.ContainsRune(".!?…。！？।॥", r) }

// isFullWidth reports CJK punctuation, which ends a sentence or clause
// without a space after it.
func isFullWidth(r rune) bool { return strings.ContainsRune("。！？、，；：", r) }

func isClauseEnd(r rune) bool { return strings.ContainsRune(",;:—–、，；：", r) }
