#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/ (the binary formats built byte by byte from
their specifications in the headers named below). Seeds made by elmo_fast itself (safetensors
files, a bilm-tf HDF5 export) are described in tests/fuzz/README.md. Run from the repository root:
    python3 tests/fuzz/make_seeds.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# ---- config (io/config.h) and --set lines ----------------------------------------------------
put("config", "small.toml", '[run]\ndir = "runs/x"\nseed = 3\n[model]\ncell_size = 64\n'
    'projection_dim = 16\nlayers = 1\ndropout = 0.0\n[train]\nbatch_size = 4\n'
    'max_steps = 2\ndevice = "cpu"\n')
put("config", "types.toml", '[train]\nepochs = 0.5\nprecision = "bf16"\n[checkpoint]\n'
    'every_minutes = 1.5\non_write_error = "warn"\n[dist]\nhot_rows = -1\n')
put("config", "set.txt", "=train.batch_size=16\nmodel.dropout=0.25\nrun.dir=runs/y\n"
    "train.bad_step_lr_scale=0.5\n")
put("config", "bad.toml", "[model\ncell_size = 'x'\n")

# ---- vocabulary (io/vocab.h) -------------------------------------------------------------------
put("vocab", "plain.txt", b"</S>\n<S>\n<UNK>\nthe 10\nof 5\n\xc3\xa9t\xc3\xa9\n")
put("vocab", "missing_specials.txt", "a\nb\n\nc\t3\n")
put("vocab", "duplicate.txt", "<S>\n</S>\n<UNK>\na\na\n")

# ---- corpus text (io/corpus.h) -----------------------------------------------------------------
put("corpus", "text.txt", b"the cat sat\n\n  on\tthe mat \r\n\xe2\x82\xac 5\nlast line")
put("corpus", "bad_utf8.txt", b"ok line\nbad \xc3\x28 here\n")
put("corpus", "long_line.txt", (b"word " * 1200) + b"\n" + (b"\xf0\x9f\x98\x80 " * 300))

# ---- bilm-tf HDF5 weights (tests/fuzz/fuzz_bilm_hdf5.cpp: a plan, mutations, float values) ----
# plan bytes: layers-1, directions-1, projection, C-1, P-1, input-1, extras (bit 0 embedding,
# bit 1 softmax, bits 2+ mutation count), V-1; then 3 bytes per mutation (op, which, arg).
put("bilm_hdf5", "one_layer", bytes([0, 0, 0, 1, 0, 2, 0, 2]))
put("bilm_hdf5", "elmo_like", bytes([1, 1, 1, 3, 1, 4, 3, 5]) + struct.pack("<8f", *range(8)))
put("bilm_hdf5", "reshaped", bytes([1, 1, 1, 2, 2, 3, 3 | 4, 3, 1, 5, 17]))
put("bilm_hdf5", "unwritten_huge", bytes([0, 1, 1, 1, 1, 1, 1 | 8, 2, 6, 9, 3, 3, 2, 1]))
put("bilm_hdf5", "retyped_and_group", bytes([2, 0, 0, 3, 0, 4, 2 | 12, 4, 3, 1, 2, 7, 4, 0, 7,
                                             0, 4, 1, 200]))

# ---- token cache (io/token_cache.h; the fuzz target's source and vocabulary) -------------------
def token_cache(sentences, vocab_size=7):
    path = b"/fuzz/corpus.txt"
    header_bytes = (104 + len(path) + 7) // 8 * 8
    ids, offsets = [], [0]
    for s in sentences:
        ids += s + [0xFFFFFFFF]
        offsets.append(len(ids))
    tokens = sum(len(s) for s in sentences)
    head = struct.pack("<8sII", b"ELMOTOK1", 1, header_bytes)
    head += struct.pack("<QQQqQQQQQQ", 0x1234567890ABCDEF, vocab_size, 24, 1000000000,
                        len(sentences), tokens, 0, len(ids), 0, len(path))
    head += struct.pack("<Q", 0)  # header checksum: the target seals images starting with 'E'
    head += path + b"\0" * (header_bytes - 104 - len(path))
    body = struct.pack("<%dI" % len(ids), *ids)
    body += b"\0" * ((len(body) + 7) // 8 * 8 - len(body))
    body += struct.pack("<%dQ" % len(offsets), *offsets)
    return head + body

put("token_cache", "two_sentences.elmotok", token_cache([[3, 4, 5], [6]]))
put("token_cache", "empty_sentence.elmotok", token_cache([[], [3]]))

# ---- checkpoint state.json (io/checkpoint.h; the target's tensor files) ------------------------
put("checkpoint_state", "plain.json",
    '{"format": "elmo_fast-checkpoint-1", "step": 3, "files": ["model", "optimizer", "carry"],'
    ' "tokens": 10}')
put("checkpoint_state", "sharded.json",
    '{"format": "elmo_fast-checkpoint-1", "step": 3, "files": ["model", "optimizer", "carry",'
    ' "shard-0", "shard-1"], "shards": {"files": ["shard-0", "shard-1"], "axis": {"model": 0,'
    ' "optimizer": 0, "carry": 1}, "interleave": ["model", "optimizer"], "hot_rows": 2}}')
put("checkpoint_state", "concatenated.json",
    '{"format": "elmo_fast-checkpoint-1", "step": 3, "files": ["shard-0", "shard-1"],'
    ' "shards": {"files": ["shard-0", "shard-1"], "axis": {"model": 0, "optimizer": 0,'
    ' "carry": 2}}}')

# ---- sparse exchange messages (comm/sparse_exchange_wire.h): header, then the rows payload -----
def message(kind, src, payload, num_tables=3, step=7, magic=0x454C4D58):
    return struct.pack("<IIqiiQ", magic, kind, step, src, num_tables, len(payload)) + payload

def rows(per_table, dims=(4, 4, 1), values=True):
    out = struct.pack("<3q", *[len(ids) for ids in per_table])
    for ids in per_table:
        out += struct.pack("<%di" % len(ids), *ids)
    if values:
        for ids, dim in zip(per_table, dims):
            out += struct.pack("<%df" % (len(ids) * dim), *([0.5] * (len(ids) * dim)))
    return out

owned = [[11, 14, 17], [11, 20], [47]]  # rank 1 of 3 owns 10 + 1 + 3k
put("sparse_wire", "fetch_request", message(2, 0, rows(owned, values=False)))
put("sparse_wire", "fetch_reply", message(3, 2, rows([[12, 15], [], [13]])))
put("sparse_wire", "gradients", message(5, 2, rows(owned)))
put("sparse_wire", "step_done", message(4, 0, rows([[], [], []])))
put("sparse_wire", "goodbye", message(6, 2, b""))

# ---- rendezvous frames (comm/rendezvous.h): frame length, handshake, requests -----------------
def u32(v): return struct.pack("<I", v)
def blob(b): return u32(len(b)) + b

put("rendezvous", "hello", blob(b"job-token") + struct.pack("<iq", 3, 4242) + blob(b"host") +
    b"\x00")
put("rendezvous", "set", b"\x01" + blob(b"ucx/0/addr") + blob(b"\x00\x01\x02"))
put("rendezvous", "get", b"\x02" + blob(b"barrier/x/done/0") + struct.pack("<d", 120.0))
put("rendezvous", "add", b"\x04" + blob(b"barrier/x") + struct.pack("<q", 1))
put("rendezvous", "report_fault", b"\x06" + blob(b"rank 3 failed"))
put("rendezvous", "frame", u32(70000) + b"tail")
