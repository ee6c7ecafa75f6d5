// The serve tests' fixture (ctest FIXTURES_SETUP serve_node): the official OpenAI SDK and puppeteer-core
// (which drives chromium for test_console.mjs) installed with `npm ci` from tests/serve/package-lock.json
// into the build tree (never into the source tree), and
// a slow model for the tests that need a generation to last: the tiny llama's tokenizer and chat
// template on random weights 8x as wide (tests/serve/slow-model-config.json) and without an end of
// sequence token, so it decodes a few hundred tokens/s and never stops by itself.
// usage: node setup.mjs NODE_DIR NPM OPENCON E2E_DIR SLOW_DIR
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [nodeDir, npm, opencon, e2e, slowDir] = process.argv.slice(2);
if (!slowDir) {
  console.error('usage: node setup.mjs NODE_DIR NPM OPENCON E2E_DIR SLOW_DIR');
  process.exit(2);
}

// npm ci again only when the lock file changed (a stamp beside node_modules)
function installPackages() {
  fs.mkdirSync(nodeDir, { recursive: true });
  const lock = fs.readFileSync(path.join(here, 'package-lock.json'), 'utf8');
  const stamp = path.join(nodeDir, 'installed-lock.json');
  const pkg = (name) => path.join(nodeDir, 'node_modules', name, 'package.json');
  const names = Object.keys(JSON.parse(fs.readFileSync(path.join(here, 'package.json'), 'utf8')).dependencies);
  if (names.every((n) => fs.existsSync(pkg(n))) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === lock) {
    console.log(`${names.join(', ')} already installed in ${nodeDir}`);
    return;
  }
  fs.copyFileSync(path.join(here, 'package.json'), path.join(nodeDir, 'package.json'));
  fs.writeFileSync(path.join(nodeDir, 'package-lock.json'), lock);
  fs.rmSync(stamp, { force: true });
  execFileSync(npm, ['ci', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: nodeDir, stdio: 'inherit' });
  fs.writeFileSync(stamp, lock);
  for (const n of names) console.log(`${n} ${JSON.parse(fs.readFileSync(pkg(n), 'utf8')).version} installed in ${nodeDir}`);
}

// the slow model, made again when its config changed
function makeSlowModel() {
  const config = fs.readFileSync(path.join(here, 'slow-model-config.json'), 'utf8');
  const stamp = path.join(slowDir, 'source-config.json');
  if (fs.existsSync(path.join(slowDir, 'model.safetensors')) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === config) {
    console.log(`slow model already in ${slowDir}`);
    return;
  }
  fs.rmSync(slowDir, { recursive: true, force: true });
  execFileSync(opencon, ['random-model', '--config', path.join(here, 'slow-model-config.json'), '--out', slowDir, '--seed', '1'], { stdio: 'inherit' });
  const tiny = path.join(e2e, 'llama3-tiny-chat');
  for (const f of ['tokenizer.json', 'chat_template.jinja']) fs.copyFileSync(path.join(tiny, f), path.join(slowDir, f));
  // no eos_token: the chat template's end of turn would end generations (the config names no eos id either)
  fs.writeFileSync(path.join(slowDir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|begin_of_text|>' }));
  fs.writeFileSync(stamp, config);
  console.log(`slow model written to ${slowDir}`);
}

installPackages();
makeSlowModel();
