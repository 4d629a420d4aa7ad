// Command floorproxy is the floor of a goroutine-per-connection Go proxy,
// for bench/run.sh's "go-floor" target: per client connection one upstream
// connection and one goroutine, and no HTTP beyond finding the end of a
// bodyless request head and of a Content-Length response. It is not a
// proxy anyone should run (no Host, no chunked bodies, no errors worth the
// name); it shows how much of the gap between Meridian and nginx is Go's
// runtime and the kernel (what this pays too) and how much is Meridian's
// own per-request work (what it does not do).
package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"log"
	"net"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18005", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18000", "backend address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, *upstream)
	}
}

func serve(c net.Conn, upstream string) {
	defer c.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	cr, ur := bufio.NewReader(c), bufio.NewReader(up)
	buf := make([]byte, 0, 8<<10)
	for {
		// The request head, as received.
		buf = buf[:0]
		for {
			line, err := cr.ReadSlice('\n')
			if err != nil {
				return
			}
			buf = append(buf, line...)
			if len(line) <= 2 {
				break
			}
		}
		if _, err := up.Write(buf); err != nil {
			return
		}
		// The response head and its Content-Length body, in one write.
		buf = buf[:0]
		n := 0
		for {
			line, err := ur.ReadSlice('\n')
			if err != nil {
				return
			}
			buf = append(buf, line...)
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
			if len(line) <= 2 {
				break
			}
		}
		head := len(buf)
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(ur, buf[head:]); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}
