// Package readme holds no code: its test runs the README's examples, as a
// new user would, against a gateway in front of the emulator, and compares
// what they print with the sample outputs the README shows, so that the
// README stays true.
//
// A command block takes part when an HTML comment before it names it:
// <!-- example: NAME -->, with " exit=N" when the example fails on purpose.
// A block of sample output after it is compared when a comment names it:
// <!-- output: NAME -->. In a sample, a string ending in "…" matches any
// string that starts the same, a line of "…" stands for any number of
// messages, and fields that differ from run to run (ids, first-byte times)
// are not compared.
//
// A second test keeps docs/upstream.md's citations true: every
// "docs/upstream.md §N" in the code names a section the document has.
package readme
