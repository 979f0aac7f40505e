// Command one_write is a Go TLS client that sends each HTTP/1.1 request in
// ONE crypto/tls Write (head and a large body together), and the mock
// provider it talks to, which answers a request as soon as it has read its
// head and only then, after a pause, reads the body: the client's reading
// goroutine has the whole answer while its Write is still blocked on the
// full socket. The end-to-end tests trace the client (tests/go_tls.rs).
//
//	one_write -serve
//	    prints "port N", then serves HTTPS on 127.0.0.1:N (a self-signed
//	    certificate made at start): request i (from 0) is answered 200 with
//	    an OpenAI chat completion and its usage when i is even, 413 with an
//	    OpenAI error when odd.
//	one_write -connect HOST:PORT -requests N -body BYTES
//	    waits for a line on stdin (the agent is attached), then sends N
//	    POST /v1/chat/completions on one connection, each body BYTES long,
//	    and prints per request: "status S tokens IN OUT early E", E true when
//	    the answer was read whole before the request's Write returned.
//	    With -lazy-handshake, the client does not call Handshake: its first
//	    Write handshakes (the server's first Read always does).
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// socketBuffer is both ends' fixed kernel buffer: far below the request's
// size, so the request's Write stays blocked until the server reads the body.
const socketBuffer = 256 << 10

func main() {
	args := map[string]string{}
	lazy := false
	for i := 1; i < len(os.Args); i++ {
		if os.Args[i] == "-serve" {
			serve()
			return
		}
		if os.Args[i] == "-lazy-handshake" {
			lazy = true
			continue
		}
		if i+1 < len(os.Args) {
			args[os.Args[i]] = os.Args[i+1]
			i++
		}
	}
	requests, err1 := strconv.Atoi(args["-requests"])
	size, err2 := strconv.Atoi(args["-body"])
	if args["-connect"] == "" || err1 != nil || err2 != nil {
		log.Fatal("use -serve, or -connect HOST:PORT -requests N -body BYTES")
	}
	client(args["-connect"], requests, size, lazy)
}

func client(addr string, requests, size int, lazy bool) {
	bufio.NewReader(os.Stdin).ReadString('\n')
	tcp, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	// A fixed, small send buffer (autotuning off) so an 8-MiB Write blocks.
	if err := tcp.(*net.TCPConn).SetWriteBuffer(socketBuffer); err != nil {
		log.Fatal(err)
	}
	conn := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true})
	defer conn.Close()
	// Handshake before the first Write, as Go's HTTP client does; lazily,
	// inside the first Write, as a bare crypto/tls client does.
	if !lazy {
		if err := conn.Handshake(); err != nil {
			log.Fatal(err)
		}
	}
	reader := bufio.NewReader(conn)
	for i := 0; i < requests; i++ {
		prefix := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`
		suffix := `"}]}`
		body := prefix + string(bytes.Repeat([]byte("a"), size-len(prefix)-len(suffix))) + suffix
		head := "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
		written := make(chan error, 1)
		request := []byte(head + body)
		go func() {
			n, err := conn.Write(request)
			if err == nil && n != len(request) {
				err = fmt.Errorf("wrote %d of %d", n, len(request))
			}
			written <- err
		}()
		resp, err := http.ReadResponse(reader, nil)
		if err != nil {
			log.Fatal(err)
		}
		answer, err := io.ReadAll(resp.Body)
		if err != nil {
			log.Fatal(err)
		}
		early := true
		select {
		case err := <-written:
			early = false
			if err != nil {
				log.Fatal(err)
			}
		default:
			if err := <-written; err != nil {
				log.Fatal(err)
			}
		}
		var usage struct {
			Usage struct {
				Prompt     int `json:"prompt_tokens"`
				Completion int `json:"completion_tokens"`
			} `json:"usage"`
		}
		json.Unmarshal(answer, &usage)
		fmt.Printf("status %d tokens %d %d early %t\n", resp.StatusCode, usage.Usage.Prompt, usage.Usage.Completion, early)
	}
}

func serve() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
	fmt.Printf("port %d\n", listener.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := listener.Accept()
		if err != nil {
			log.Fatal(err)
		}
		// A fixed, small receive buffer: with autotuning (tcp_rmem's
		// maximum is 32 MiB on some hosts) the whole 8-MiB request could
		// sit in the kernel and the client's Write return before the answer.
		if err := conn.(*net.TCPConn).SetReadBuffer(socketBuffer); err != nil {
			log.Fatal(err)
		}
		go answer(tls.Server(conn, config))
	}
}

// answer serves one connection: each request answered after its head,
// its body read 300 ms later.
func answer(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(reader)
		if err != nil {
			return
		}
		status, body := 200, `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":`+strconv.Itoa(1000+i)+`,"completion_tokens":`+strconv.Itoa(7+i)+`,"total_tokens":`+strconv.Itoa(1007+2*i)+`}}`
		if i%2 == 1 {
			status, body = 413, `{"error":{"message":"request too large","type":"invalid_request_error","code":"request_too_large"}}`
		}
		fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			status, http.StatusText(status), len(body), body)
		time.Sleep(300 * time.Millisecond)
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
	}
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
