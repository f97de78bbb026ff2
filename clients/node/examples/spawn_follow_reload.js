'use strict';
// Spawn a child that takes its state from a file, reload its state, follow its output until
// it exits, and read its health. Run against a supd: SUPD_ADDR=unix:///path/supd.sock node examples/spawn_follow_reload.js
const fs = require('fs');
const os = require('os');
const path = require('path');
const { SupdClient } = require('..');

async function main() {
  const supd = new SupdClient(process.env.SUPD_ADDR);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'supd-node-'));
  const stateFile = path.join(dir, 'state.json');
  const name = process.env.CHILD_NAME || 'node-example';
  try {
    // The child waits for its state file, prints it and exits: supd writes the file on Reload.
    const script = `echo waiting; while [ ! -s "${stateFile}" ]; do sleep 0.05; done; echo "state: $(cat "${stateFile}")"`;
    const child = await supd.spawn({
      name,
      argv: ['sh', '-c', script],
      restart: 'RESTART_POLICY_NEVER',
      state_delivery: { file: { path: stateFile } },
    }, { replace: true });
    console.error(`spawned ${name}: pid ${child.pid}`);

    const reloaded = await supd.reload(name, JSON.stringify({ greeting: 'hello' }), { contentType: 'application/json' });
    console.error(`state revision ${reloaded.revision} accepted`);

    const lines = [];
    let exit = null;
    for await (const item of supd.follow(name, { fromSeq: 0 })) {
      if (item.line) lines.push(item.line.text);
      if (item.gap) console.error(`gap: ${item.gap.count} records lost`);
      if (item.event && item.event.kind === 'KIND_EXITED') {
        exit = item.event.exit;
        break;
      }
    }

    const health = await supd.health(name);
    const info = health.children[0];
    const state = await supd.getState(name);
    console.log(JSON.stringify({
      lines,
      exit_code: exit.code,
      state: info.state,
      health: info.health,
      state_revision: info.state_revision,
      stored_state: state.revision.state.toString('utf8'),
      supd_version: health.version,
    }));
    await supd.remove(name);
  } finally {
    supd.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(`example failed: ${error.details || error.message} (gRPC status ${error.code})`);
  process.exit(1);
});
