'use strict';
/**
 * A small Node.js client of supd. It loads the contract from proto/ at run time
 * (@grpc/proto-loader), so there is no generated code to keep in step: the .proto
 * files are the reference, their comments the documentation.
 *
 * Address forms (as supctl and the Python client): unix:///path/to/supd.sock, a
 * bare absolute path, or host:port (TLS unless { insecure: true }). A bearer token
 * travels as the `authorization: Bearer <token>` metadata of every call.
 * Settings default to SUPD_ADDR, SUPD_TOKEN_FILE, SUPD_CA_FILE, SUPD_CERT_FILE,
 * SUPD_KEY_FILE, SUPD_SERVER_NAME and SUPD_INSECURE.
 *
 * Every failed call rejects with a grpc-js ServiceError: `code` is the gRPC
 * status (grpc.status.NOT_FOUND, ...), `details` supd's words.
 */
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.SUPD_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');
const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
// Quick calls get a short deadline; calls that may wait out a child's stop grace (at most 3600 s) an hour more.
const QUICK_MS = 30000;
const STOPPING_MS = 3660000;
const RELOAD_MS = 120000;
const RECONNECT_MS = 30000;

let loaded = null;
function supervisorPackage() {
  if (loaded === null) {
    const definition = protoLoader.loadSync('supervisor/v1/supervisor.proto', {
      ...LOADER_OPTIONS,
      includeDirs: [PROTO_DIR],
    });
    loaded = grpc.loadPackageDefinition(definition).supervisor.v1;
  }
  return loaded;
}

/** The socket supd uses without --socket: as supervisor.paths.default_socket_path. */
function defaultSocket() {
  const uid = process.geteuid();
  if (uid === 0) return '/run/supd/supd.sock';
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? path.join(runtime, 'supd', 'supd.sock') : `/tmp/supd-${uid}/supd.sock`;
}

/** unix:///path for a bare path; every other form as given. */
function normaliseAddress(address) {
  return address.startsWith('/') ? `unix://${address}` : address;
}

function truthy(text) {
  return ['1', 'true', 'yes', 'on'].includes(String(text || '').trim().toLowerCase());
}

function readToken(file) {
  const token = fs.readFileSync(file, 'ascii').trim();
  if (!token || /\s/.test(token)) throw new Error(`the token file ${file} must hold one token: a single word of ASCII`);
  return token;
}

function credentialsFor(address, options) {
  if (address.startsWith('unix:') || options.insecure) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(options.caFile), read(options.keyFile), read(options.certFile));
}

function isConnectionLost(error) {
  return error && error.code === grpc.status.UNAVAILABLE;
}

class SupdClient {
  /**
   * @param {string} [address] see the module comment; default SUPD_ADDR, else the per-user default socket.
   * @param {object} [options] { tokenFile, caFile, certFile, keyFile, serverName, insecure, timeoutMs }
   */
  constructor(address, options = {}) {
    const env = process.env;
    this.address = normaliseAddress(address || env.SUPD_ADDR || `unix://${defaultSocket()}`);
    const opts = {
      tokenFile: options.tokenFile || env.SUPD_TOKEN_FILE,
      caFile: options.caFile || env.SUPD_CA_FILE,
      certFile: options.certFile || env.SUPD_CERT_FILE,
      keyFile: options.keyFile || env.SUPD_KEY_FILE,
      serverName: options.serverName || env.SUPD_SERVER_NAME,
      insecure: options.insecure !== undefined ? options.insecure : truthy(env.SUPD_INSECURE),
    };
    this.timeoutMs = options.timeoutMs;
    this.token = opts.tokenFile ? readToken(opts.tokenFile) : null;
    const channelOptions = { 'grpc.max_receive_message_length': -1 };
    if (opts.serverName) channelOptions['grpc.ssl_target_name_override'] = opts.serverName;
    const target = this.address.replace(/^unix:\/\/\//, 'unix:/');
    const Supervisor = supervisorPackage().Supervisor;
    this.stub = new Supervisor(target, credentialsFor(this.address, opts), channelOptions);
  }

  close() {
    this.stub.close();
  }

  metadata() {
    const md = new grpc.Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  unary(method, request, defaultMs) {
    const deadline = new Date(Date.now() + (this.timeoutMs || defaultMs));
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadata(), { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
    });
  }

  /** Declare a child and start it; resolves to its ChildInfo after the first start attempt. */
  async spawn(spec, { replace = false } = {}) {
    return (await this.unary('Spawn', { spec, replace }, STOPPING_MS)).child;
  }

  async list() {
    return (await this.unary('List', {}, QUICK_MS)).children;
  }

  /** HealthResponse of one child (NOT_FOUND if unknown) or all. */
  health(name = '') {
    return this.unary('Health', { name }, QUICK_MS);
  }

  stop(name, graceSeconds = 0) {
    return this.unary('Stop', { name, grace_seconds: graceSeconds }, STOPPING_MS);
  }

  async restart(name, graceSeconds = 0) {
    return (await this.unary('Restart', { name, grace_seconds: graceSeconds }, STOPPING_MS)).child;
  }

  async signal(name, signal, { group = false } = {}) {
    await this.unary('Signal', { name, signal, group }, QUICK_MS);
  }

  remove(name, graceSeconds = 0) {
    return this.unary('Remove', { name, grace_seconds: graceSeconds }, STOPPING_MS);
  }

  /** Deliver a new state (a Buffer or a string, sent as UTF-8) and store it once the child accepted it. */
  reload(name, state, { contentType = '', expectedRevision } = {}) {
    const request = { name, state: Buffer.from(state), content_type: contentType };
    if (expectedRevision !== undefined) request.expected_revision = expectedRevision;
    return this.unary('Reload', request, RELOAD_MS);
  }

  getState(name, revision = 0) {
    return this.unary('GetState', { name, revision }, QUICK_MS);
  }

  waitConnected(ms) {
    return new Promise((resolve) => this.stub.waitForReady(new Date(Date.now() + ms), (error) => resolve(!error)));
  }

  /**
   * A child's records as an async iterator of { line }, { event } or { gap } objects (a line is
   * { seq, stream, generation, time, data: Buffer, text }). It follows live output; when the
   * connection breaks it asks again from the next sequence number for up to `reconnectMs`, so no
   * record arrives twice and none is skipped that a gap does not report.
   */
  async *follow(name, { fromSeq, tail, live = true, reconnectMs = RECONNECT_MS } = {}) {
    let nextSeq = fromSeq;
    for (;;) {
      const request = { name, follow: live };
      if (nextSeq !== undefined) request.from_seq = nextSeq;
      else if (tail !== undefined) request.tail = tail;
      const call = this.stub.Stream(request, this.metadata());
      try {
        for await (const msg of call) {
          for (const item of itemsOf(msg)) {
            const seq = item.line ? item.line.seq : item.event ? item.event.seq : item.gap.first_seq;
            const end = item.gap ? seq + item.gap.count : seq + 1;
            if (nextSeq !== undefined && end <= nextSeq) continue;
            nextSeq = end;
            yield item;
          }
        }
        return;
      } catch (error) {
        if (!reconnectMs || !isConnectionLost(error) || !(await this.waitConnected(reconnectMs))) throw error;
      } finally {
        call.cancel();
      }
    }
  }
}

function* itemsOf(msg) {
  if (msg.item === 'lines') {
    const batch = msg.lines;
    let offset = 0;
    for (let i = 0; i < batch.lengths.length; i += 1) {
      const data = batch.data.subarray(offset, offset + batch.lengths[i]);
      offset += batch.lengths[i];
      yield {
        line: {
          seq: batch.first_seq + i,
          stream: batch.stream === 'OUTPUT_STREAM_STDERR' ? 'stderr' : 'stdout',
          generation: batch.generation,
          time: batch.time,
          data,
          text: data.toString('utf8').replace(/\n$/, ''),
        },
      };
    }
  } else if (msg.item === 'event') {
    yield { event: msg.event };
  } else if (msg.item === 'gap') {
    yield { gap: msg.gap };
  }
}

module.exports = { SupdClient, normaliseAddress, status: grpc.status, PROTO_DIR };
