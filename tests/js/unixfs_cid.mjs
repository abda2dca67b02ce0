// Independent reference for fl_chain.storage.unixfs: print the CID that
// ipfs-unixfs-importer (the JS UnixFS implementation) gives each input file.
//
//   node tests/js/unixfs_cid.mjs [--chunk-size N] [--max-children N] FILE...
//
// One CID per line, in argument order. Every layout option is spelled out
// rather than left to the importer's defaults, so a change of defaults in a
// future release cannot silently move the reference. Blocks are discarded:
// only the root CID is wanted.

import { createReadStream } from 'node:fs'
import { argv, exit, stderr, stdout } from 'node:process'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

function parseArgs (args) {
  const options = { chunkSize: 262144, maxChildren: 174, files: [] }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (arg === '--chunk-size' || arg === '--max-children') {
      const value = Number(args[++i])
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new Error(`${arg} needs a positive integer, got ${args[i]}`)
      }
      options[arg === '--chunk-size' ? 'chunkSize' : 'maxChildren'] = value
    } else {
      options.files.push(arg)
    }
  }
  if (options.files.length === 0) {
    throw new Error('usage: unixfs_cid.mjs [--chunk-size N] [--max-children N] FILE...')
  }
  return options
}

const discard = { put: async (cid) => cid }

async function cidOf (path, { chunkSize, maxChildren }) {
  const source = [{ content: createReadStream(path, { highWaterMark: 1 << 20 }) }]
  let last
  for await (const entry of importer(source, discard, {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: maxChildren })
  })) {
    last = entry
  }
  return last.cid.toString()
}

try {
  const options = parseArgs(argv.slice(2))
  for (const file of options.files) {
    stdout.write(`${await cidOf(file, options)}\n`)
  }
} catch (error) {
  stderr.write(`unixfs_cid.mjs: ${error.message}\n`)
  exit(1)
}
