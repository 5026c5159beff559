"""A webhook receiver for the black-box tests: verifies every request with the
`standardwebhooks` package (an implementation of the Standard Webhooks specification that
is not ours), answers 500 to the first N requests and 204 after, and prints one JSON line per
request. Usage: webhook_receiver.py SECRET_FILE FAIL_FIRST. It prints {"port": P} first, reads
the endpoint's secret from SECRET_FILE at each request (the test writes it once the endpoint
exists), and exits when its stdin closes (the test ended)."""
import http.server
import json
import sys
import threading

from standardwebhooks import Webhook

secret_file, fail_first = sys.argv[1], int(sys.argv[2])
count = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            count += 1
            n = count
        try:
            with open(secret_file) as f:
                Webhook(f.read().strip()).verify(body, dict(self.headers))
            verified = True
        except Exception as e:  # any failure to verify is what the test looks for
            verified = repr(e)
        status = 500 if n <= fail_first else 204
        print(json.dumps({
            "verified": verified,
            "id": self.headers.get("webhook-id"),
            "status": status,
            "body": json.loads(body or b"null"),
        }), flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
