package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
)

// playgroundFiles are the playground page and its script, built into the
// binary: the page loads nothing from anywhere else.
//
//go:embed playground
var playgroundFiles embed.FS

// playground serves the page under /playground/. Its calls go to this same
// origin, so it needs no CORS; a strict content security policy keeps it
// to that origin.
func playground() http.Handler {
	sub, _ := fs.Sub(playgroundFiles, "playground") // the directory is embedded above
	files := http.StripPrefix("/playground/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' data:")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
