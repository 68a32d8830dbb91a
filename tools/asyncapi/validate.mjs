#!/usr/bin/env node
// Validate an AsyncAPI document with the official parser (@asyncapi/parser, which also runs
// its Spectral ruleset). evtkit's tests run it on the documents `evtkit infer` writes.
//
//   node tools/asyncapi/validate.mjs api.yaml
//
// Prints one JSON object on stdout: {"file", "valid", "errors", "diagnostics": [{"severity",
// "code", "message", "path"}]}. Exit status: 0 valid (warnings allowed), 1 at least one
// diagnostic of severity error, 2 the file cannot be read or the arguments are wrong.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Parser } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'information', 'hint'];

async function main(argv) {
  if (argv.length !== 1) {
    process.stderr.write('usage: validate.mjs FILE (AsyncAPI document, YAML or JSON)\n');
    return 2;
  }
  const file = resolve(argv[0]);
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    process.stderr.write(`validate.mjs: cannot read ${file}: ${err.message}\n`);
    return 2;
  }
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, {
    source: pathToFileURL(file).href,
  });
  const found = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.map(String),
  }));
  const errors = found.filter((d) => d.severity === 'error').length;
  const valid = document !== undefined && errors === 0;
  process.stdout.write(JSON.stringify({ file, valid, errors, diagnostics: found }) + '\n');
  return valid ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`validate.mjs: ${err?.stack ?? err}\n`);
    process.exitCode = 2;
  },
);
