// Types of the supd Node.js client (index.js). Messages are plain objects with the proto's
// field names (keepCase), enums as their names, 64-bit integers as numbers.
import { status as GrpcStatus } from '@grpc/grpc-js';

export interface ConnectionOptions {
  tokenFile?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  serverName?: string;
  insecure?: boolean;
  /** Deadline of every unary call in milliseconds, instead of each method's default. */
  timeoutMs?: number;
}

export interface Timestamp { seconds: number; nanos: number }

export interface ExitStatus {
  exited: boolean; code: number; signal: number; signal_name: string; core_dumped: boolean;
  killed_after_grace: boolean; requested: boolean; time: Timestamp | null; pid: number;
  generation: number; description: string;
}

export interface FileDelivery { path: string; mode?: number; signal?: number }
export interface StateDelivery {
  http?: { url: string; method?: string; headers?: Record<string, string> };
  file?: FileDelivery;
  exec?: { argv: string[]; timeout_seconds?: number };
  max_state_bytes?: number;
}

/** See ChildSpec in proto/supervisor/v1/supervisor.proto for every field. */
export interface ChildSpec {
  name: string;
  argv: string[];
  env?: Record<string, string>;
  inherit_env?: boolean;
  cwd?: string;
  restart?: 'RESTART_POLICY_ALWAYS' | 'RESTART_POLICY_ON_FAILURE' | 'RESTART_POLICY_NEVER';
  stop_signal?: number;
  stop_grace_seconds?: number;
  state_delivery?: StateDelivery;
  [field: string]: unknown;
}

export type ChildState =
  | 'CHILD_STATE_STARTING' | 'CHILD_STATE_RUNNING' | 'CHILD_STATE_BACKOFF' | 'CHILD_STATE_STOPPING'
  | 'CHILD_STATE_STOPPED' | 'CHILD_STATE_EXITED' | 'CHILD_STATE_FATAL';

export interface ChildInfo {
  spec: ChildSpec;
  state: ChildState;
  pid: number;
  generation: number;
  restart_count: number;
  last_exit: ExitStatus | null;
  fatal_reason: string;
  next_seq: number;
  oldest_seq: number;
  ready: boolean;
  health: 'CHILD_HEALTH_DOWN' | 'CHILD_HEALTH_NOT_READY' | 'CHILD_HEALTH_READY' | 'CHILD_HEALTH_UNHEALTHY';
  health_reason: string;
  state_revision: number;
  state_applied_revision: number;
  [field: string]: unknown;
}

export interface HealthResponse { children: ChildInfo[]; supervisor_uptime_seconds: number; version: string }
export interface StopResponse { child: ChildInfo; exit: ExitStatus | null }
export interface RemoveResponse { exit: ExitStatus | null }
export interface ReloadResponse { revision: number; attempts: number; child: ChildInfo }
export interface StateRevision {
  revision: number; state: Buffer; size_bytes: number; content_type: string; accepted: boolean; error: string;
}
export interface GetStateResponse { revision: StateRevision | null; history: StateRevision[] }

export interface Line { seq: number; stream: 'stdout' | 'stderr'; generation: number; time: Timestamp | null; data: Buffer; text: string }
export interface Event {
  seq: number; kind: string; time: Timestamp | null; generation: number; pid: number;
  exit: ExitStatus | null; message: string; revision: number;
}
export interface Gap { first_seq: number; count: number; reason: string }
export type Item = { line: Line } | { event: Event } | { gap: Gap };

export interface FollowOptions { fromSeq?: number; tail?: number; live?: boolean; reconnectMs?: number }

export class SupdClient {
  constructor(address?: string, options?: ConnectionOptions);
  readonly address: string;
  close(): void;
  spawn(spec: ChildSpec, options?: { replace?: boolean }): Promise<ChildInfo>;
  list(): Promise<ChildInfo[]>;
  health(name?: string): Promise<HealthResponse>;
  stop(name: string, graceSeconds?: number): Promise<StopResponse>;
  restart(name: string, graceSeconds?: number): Promise<ChildInfo>;
  signal(name: string, signal: number, options?: { group?: boolean }): Promise<void>;
  remove(name: string, graceSeconds?: number): Promise<RemoveResponse>;
  reload(name: string, state: Buffer | string, options?: { contentType?: string; expectedRevision?: number }): Promise<ReloadResponse>;
  getState(name: string, revision?: number): Promise<GetStateResponse>;
  waitConnected(ms: number): Promise<boolean>;
  follow(name: string, options?: FollowOptions): AsyncIterableIterator<Item>;
}

export function normaliseAddress(address: string): string;
export const status: typeof GrpcStatus;
export const PROTO_DIR: string;
