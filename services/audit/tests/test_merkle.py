"""RFC 6962 / RFC 9162 Merkle trees: known vectors, an independent library, properties.

The vectors are those of transparency-dev/merkle (https://github.com/transparency-dev/merkle):
leaves, roots and proofs from `proof/verify_test.go` at 9ca563d3ac2bab915317cf153ed4f952f6e74c07
(moved to `cmd/proofgen/main.go` at 417fb0c314750d94e53942e9f92e79b6d35915db), the corrupted
probes built the way `cmd/proofgen` builds its `testdata/` and the static `additional` probes
from `testdata/consistency/additional`. They descend from certificate-transparency's merkle_test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree  # type: ignore[import-untyped]
from pymerkle import verify_consistency as pm_verify_consistency

from consentry.audit import merkle
from consentry.audit.consentry_verify import (
    EMPTY_ROOT,
    TreeBuilder,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243")] + [
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
H = {
    "96a2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f08": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca85": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37e": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "fac5": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "6e34": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "0ebc": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b086": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
}
# (leaf number counting from 1, tree size, proof), as in the upstream tables.
INCLUSION = [
    (1, 1, []),
    (1, 8, ["96a2", "5f08", "6b47"]),
    (6, 8, ["bc1a", "ca85", "d37e"]),
    (3, 3, ["fac5"]),
    (2, 5, ["6e34", "5f08", "bc1a"]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a2", "5f08", "6b47"]),
    (6, 8, ["0ebc", "ca85", "d37e"]),
    (2, 5, ["5f08", "bc1a"]),
    (6, 7, ["0ebc", "b086", "d37e"]),
]
SOME = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def hx(names: list[str]) -> list[bytes]:
    return [bytes.fromhex(H[n]) for n in names]


def naive_root(hashes: list[bytes]) -> bytes:
    """MTH straight from the RFC 9162 definition."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return node_hash(naive_root(hashes[:k]), naive_root(hashes[k:]))


def test_empty_tree_and_known_roots() -> None:
    assert root_from_leaf_hashes([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for size in range(1, 9):
        assert root_from_leaf_hashes(HASHES[:size]) == ROOTS[size - 1]
        assert merkle.root(HASHES, size) == ROOTS[size - 1]


def test_tree_builder_one_by_one_and_in_bulk() -> None:
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    tree, bulk = TreeBuilder(), TreeBuilder()
    for i, h in enumerate(hashes, start=1):
        tree.append(h)
        assert tree.size == i
        if i in (1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300):
            assert tree.root() == naive_root(hashes[:i])
    for piece in (hashes[:5], hashes[5:6], hashes[6:133], hashes[133:]):
        bulk.extend(piece)
    assert bulk.root() == tree.root()
    with pytest.raises(ValueError, match="aligned"):
        TreeBuilder(3).append_subtree(1, SOME)


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_known_inclusion_proofs(leaf: int, size: int, proof: list[str]) -> None:
    assert merkle.inclusion_proof(HASHES, leaf - 1, size) == hx(proof)
    assert verify_inclusion(HASHES[leaf - 1], leaf - 1, size, hx(proof), ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_known_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    assert merkle.consistency_proof(HASHES, old, new) == hx(proof)
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], hx(proof))


Probe = tuple[int, int, bytes, bytes, list[bytes]]


def corrupted_inclusion(
    i: int, n: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[Probe]:
    """The wrong probes of transparency-dev/merkle cmd/proofgen invalidInclusionProof."""
    probes = [
        (i - 1, n, root, leaf, proof),
        (i + 1, n, root, leaf, proof),
        (i ^ 2, n, root, leaf, proof),
        (i, n * 2, root, leaf, proof),
        (i, n // 2, root, leaf, proof),
        (i, n, root, b"WrongLeaf", proof),
        (i, n, EMPTY_ROOT, leaf, proof),
        (i, n, SOME, leaf, proof),
        (i, n, root, leaf, [*proof, b""]),
        (i, n, root, leaf, [*proof, root]),
        (i, n, root, leaf, [b"", *proof]),
        (i, n, root, leaf, [root, *proof]),
    ]
    for k in range(len(proof)):
        flipped = [*proof]
        flipped[k] = bytes([flipped[k][0] ^ 8]) + flipped[k][1:]
        probes.append((i, n, root, leaf, flipped))
    if proof:
        probes.append((i, n, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((i, n, root, leaf, [proof[0], SOME, *proof[1:]]))
    return probes


def corrupted_consistency(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> list[Probe]:
    """The wrong probes of transparency-dev/merkle cmd/proofgen invalidConsistencyProof."""
    probes = [
        (m - 1, n, r1, r2, proof),
        (m + 1, n, r1, r2, proof),
        (m ^ 2, n, r1, r2, proof),
        (m, n * 2, r1, r2, proof),
        (m, n // 2, r1, r2, proof),
        (m, n, b"WrongRoot", r2, proof),
        (m, n, r1, b"WrongRoot", proof),
        (m, n, r2, r1, proof),
        (m, n, r1, r2, []),
        (m, n, r1, r2, [*proof, b""]),
        (m, n, r1, r2, [*proof, r1]),
        (m, n, r1, r2, [*proof, r2]),
        (m, n, r1, r2, [b"", *proof]),
        (m, n, r1, r2, [r1, *proof]),
        (m, n, r1, r2, [r2, *proof]),
        (m, n, r1, r2, [proof[0], *proof]),
        (m, n, r1, r2, proof[:-1]),
    ]
    for k in range(len(proof)):
        flipped = [*proof]
        flipped[k] = bytes([flipped[k][0] ^ 16]) + flipped[k][1:]
        probes.append((m, n, r1, r2, flipped))
    return probes


def test_corrupted_inclusion_probes_fail() -> None:
    count = 0
    for leaf, size, names in INCLUSION:
        for i, n, root, h, proof in corrupted_inclusion(
            leaf - 1, size, hx(names), ROOTS[size - 1], HASHES[leaf - 1]
        ):
            assert not verify_inclusion(h, i, n, proof, root), (i, n, proof)
            count += 1
    # testdata/inclusion/additional and single-entry
    data = leaf_hash(b"data")
    for i, n in ((0, 0), (0, 1), (1, 0), (2, 1)):
        assert not verify_inclusion(SOME, i, n, [], EMPTY_ROOT)
        assert not verify_inclusion(b"", i, n, [], EMPTY_ROOT)
        assert not verify_inclusion(SOME, i, n, [], b"")
    assert verify_inclusion(data, 0, 1, [], data)
    assert not verify_inclusion(b"", 0, 1, [], b"")
    assert count > 60


def test_corrupted_consistency_probes_fail() -> None:
    for old, new, names in CONSISTENCY:
        if names:
            for m, n, r1, r2, proof in corrupted_consistency(
                old, new, ROOTS[old - 1], ROOTS[new - 1], hx(names)
            ):
                assert not verify_consistency(m, n, r1, r2, proof), (m, n, proof)


@pytest.mark.parametrize(
    ("m", "n", "r1", "r2", "proof", "ok"),
    [  # testdata/consistency/additional (root "don't care" values, empty-tree root, ...)
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 0, EMPTY_ROOT, b"don't care 2", [], False),
        (1, 1, EMPTY_ROOT, b"don't care 2", [], False),
        (2, 1, b"don't care 1", b"don't care 2", [], False),
        (1, 0, b"don't care 1", b"don't care 2", [], False),
        (0, 1, b"don't care 1", b"don't care 2", [], False),
        (0, 1, EMPTY_ROOT, b"don't care 2", [], False),
        (1, 1, b"don't care 2", b"don't care 2", [], True),
        (1, 1, b"don't care 1", b"don't care 2", [], False),
        (0, 0, b"don't care 1", b"don't care 1", [], False),
        (0, 0, b"don't care 1", b"don't care 2", [], False),
        (1, 2, b"don't care 1", b"don't care 2", [], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_additional_consistency_probes(
    m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes], ok: bool
) -> None:
    assert verify_consistency(m, n, r1, r2, proof) is ok


def test_generation_rejects_impossible_requests() -> None:
    for call in (
        lambda: merkle.inclusion_proof(HASHES, 8, 8),
        lambda: merkle.inclusion_proof(HASHES, 0, 9),
        lambda: merkle.consistency_proof(HASHES, 0, 3),
        lambda: merkle.consistency_proof(HASHES, 4, 3),
        lambda: merkle.root(HASHES, 9),
    ):
        with pytest.raises(ValueError, match=r"size|leaf|range"):
            call()


def test_cross_check_with_pymerkle() -> None:
    """pymerkle 7 (RFC 9162) computes the same roots and audit paths, and accepts our roots."""
    data = [f"entry {i}".encode() for i in range(40)]
    tree = InmemoryTree(algorithm="sha256")
    for entry in data:
        tree.append_entry(entry)
    hashes = [leaf_hash(entry) for entry in data]
    for size in range(1, 41):
        assert tree.get_root(size) == root_from_leaf_hashes(hashes[:size])
        for index in range(size):
            theirs = tree.prove_inclusion(index + 1, size).path
            assert theirs == [hashes[index], *merkle.inclusion_proof(hashes, index, size)]
        for old in range(1, size + 1):
            proof = tree.prove_consistency(old, size)
            pm_verify_consistency(
                root_from_leaf_hashes(hashes[:old]), root_from_leaf_hashes(hashes[:size]), proof
            )
            ours = merkle.consistency_proof(hashes, old, size)
            assert verify_consistency(old, size, tree.get_root(old), tree.get_root(size), ours)


SIZES = st.integers(min_value=1, max_value=70).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n))
)
ALL = [leaf_hash(i.to_bytes(1, "big")) for i in range(70)]


def flips(proof: list[bytes]) -> list[list[bytes]]:
    return [[*proof[:k], bytes([p[0] ^ 1]) + p[1:], *proof[k + 1 :]] for k, p in enumerate(proof)]


@settings(max_examples=150, deadline=None)
@given(SIZES, st.data())
def test_every_inclusion_proof_verifies_and_any_flip_fails(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size, _ = sizes
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = root_from_leaf_hashes(ALL[:size])
    proof = merkle.inclusion_proof(ALL, index, size)
    assert verify_inclusion(ALL[index], index, size, proof, root)
    wrong_root = bytes([root[0] ^ 1]) + root[1:]
    assert not verify_inclusion(ALL[index], index, size, proof, wrong_root)
    for bad in flips(proof):
        assert not verify_inclusion(ALL[index], index, size, bad, root)


@settings(max_examples=150, deadline=None)
@given(SIZES)
def test_every_consistency_proof_verifies_and_any_flip_fails(sizes: tuple[int, int]) -> None:
    new, old = sizes
    r1, r2 = root_from_leaf_hashes(ALL[:old]), root_from_leaf_hashes(ALL[:new])
    proof = merkle.consistency_proof(ALL, old, new)
    assert verify_consistency(old, new, r1, r2, proof)
    flip: Callable[[bytes], bytes] = lambda r: bytes([r[0] ^ 1]) + r[1:]  # noqa: E731
    assert not verify_consistency(old, new, flip(r1), r2, proof)
    assert not verify_consistency(old, new, r1, flip(r2), proof)
    for bad in flips(proof):
        assert not verify_consistency(old, new, r1, r2, bad)


def test_all_small_pairs_exhaustively() -> None:
    for size in range(1, 71):
        root = root_from_leaf_hashes(ALL[:size])
        assert root == naive_root(ALL[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(ALL, index, size)
            assert verify_inclusion(ALL[index], index, size, proof, root)
        for old in range(1, size + 1):
            proof = merkle.consistency_proof(ALL, old, size)
            assert verify_consistency(old, size, root_from_leaf_hashes(ALL[:old]), root, proof)
