// Command hookrecorder is a webhook receiver for end-to-end tests: it keeps every POST to
// /hook in memory (its headers, its body, and the status it was answered with) and returns
// them all on GET /received, so a test can read back exactly what a sender sent and how
// often. POST /fail?count=N makes it answer the next N hooks with 503, to play a receiver
// that is down. /healthz answers 200 for probes. Standard library only.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"
)

type delivery struct {
	Time    time.Time         `json:"time"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type recorder struct {
	mu       sync.Mutex
	received []delivery
	failNext int
}

func (r *recorder) hook(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	headers := map[string]string{}
	for name := range req.Header {
		headers[http.CanonicalHeaderKey(name)] = req.Header.Get(name)
	}
	r.mu.Lock()
	status := http.StatusOK
	if r.failNext > 0 {
		r.failNext--
		status = http.StatusServiceUnavailable
	}
	r.received = append(r.received, delivery{time.Now().UTC(), status, headers, string(body)})
	r.mu.Unlock()
	log.Printf("hook from %s answered %d: %s", req.RemoteAddr, status, body)
	w.WriteHeader(status)
}

func (r *recorder) list(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	received := r.received
	if received == nil {
		received = []delivery{}
	}
	_ = json.NewEncoder(w).Encode(received)
}

func (r *recorder) fail(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	count, err := strconv.Atoi(req.URL.Query().Get("count"))
	if err != nil || count < 0 {
		http.Error(w, "count must be a number of hooks", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.failNext = count
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	r := &recorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", r.hook)
	mux.HandleFunc("/received", r.list)
	mux.HandleFunc("/fail", r.fail)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("recording hooks on %s", *listen)
	log.Fatal(server.ListenAndServe())
}
