// Command modelstore serves the files of one directory read-only over HTTP, so that model
// pods can load models from an http:// URI inside the cluster. GET and HEAD only; /healthz
// answers 200 for probes.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"
)

func main() {
	dir := flag.String("dir", "/models", "directory to serve")
	listen := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()

	files := http.FileServer(http.Dir(*dir))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, `{"error": "read-only store: only GET and HEAD"}`, http.StatusMethodNotAllowed)
			return
		}
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		files.ServeHTTP(w, r)
	})
	server := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
	log.Printf("serving %s on %s", *dir, *listen)
	log.Fatal(server.ListenAndServe())
}
