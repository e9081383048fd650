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
// The deployment's inference key, as every caller of a keyed deployment sends it (both sides of a comparison are
// models of one server, so both pay for it alike).
const authorization = __ENV.TOKEN ? `Bearer ${__ENV.TOKEN}` : null;
const headers = { headers: Object.assign({ 'Content-Type': 'application/json' }, authorization ? { Authorization: authorization } : {}),
                  timeout: '30s' };
const metadata = authorization ? { [__ENV.GRPC_KEY_HEADER]: authorization } : {};

export default function () {
  if (protocol === 'http') {
    const response = http.post(__ENV.URL, payload, headers);
    check(response, { ok: (r) => r.status === 200 });
    return;
  }
  if (__ITER === 0) {
    client.connect(__ENV.ADDRESS, { plaintext: true, timeout: '30s' });
  }
  const response = client.invoke(__ENV.METHOD, message, { timeout: '30s', metadata: metadata });
  check(response, { ok: (r) => r && r.status === grpc.StatusOK });
}
