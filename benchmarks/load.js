// One k6 scenario: a fixed request to one model over HTTP or gRPC, by constant virtual users.
// Driven by benchmarks/run.py through environment variables; the same script loads mfn's and the
// hand-written models, so the client is identical on both sides of every comparison.
import http from 'k6/http';
import grpc from 'k6/net/grpc';
import { check } from 'k6';

const protocol = __ENV.PROTOCOL;
const payload = open(__ENV.PAYLOAD);
const client = new grpc.Client();
if (protocol === 'grpc') {
  client.loadProtoset(__ENV.PROTOSET);
}
const message = protocol === 'grpc' ? JSON.parse(payload) : null;
const headers = { headers: { 'Content-Type': 'application/json' }, timeout: '30s' };

export default function () {
  if (protocol === 'http') {
    const response = http.post(__ENV.URL, payload, headers);
    check(response, { ok: (r) => r.status === 200 });
    return;
  }
  if (__ITER === 0) {
    client.connect(__ENV.ADDRESS, { plaintext: true, timeout: '30s' });
  }
  const response = client.invoke(__ENV.METHOD, message, { timeout: '30s' });
  check(response, { ok: (r) => r && r.status === grpc.StatusOK });
}
