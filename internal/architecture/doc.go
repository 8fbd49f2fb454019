// Package architecture holds no code: its test checks the rules of the
// project's package graph, which reads transport (server) → services
// (internal/speech, internal/contract) → upstream client (internal/smallest)
// → wire formats (internal/sse, internal/audio), so that a change that
// breaks a rule fails before it lands.
package architecture
