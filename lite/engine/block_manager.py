"""Logical KV blocks: block tables, reference counts and the prefix cache.

Blocks are integer ids 0..num_blocks-1; the backend's KV-cache manager maps them to memory.
No tensors here.

Prefix caching: a FULL block is keyed by hash(parent block's hash, its token ids), so a key
names the whole prefix up to the end of the block. Hashes are registered by
`cache_full_blocks` once the step that computed the block's KV has run, so nobody can hit a
block whose KV is not written yet. A hit also compares the stored tokens: a hash alone is
never trusted. Freed blocks keep their hash and wait in LRU order to be revived by a later
request with the same prefix; the hash is dropped only when the block is handed out afresh.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

from lite.engine.sequence import UNRESOLVED, Sequence


def hash_block(parent_hash: bytes | None, token_ids: tuple[int, ...]) -> bytes:
    # A cryptographic hash, so a crafted prompt cannot collide with another request's prefix
    # on purpose; 16 bytes keep the chain cheap. Token ids are packed as int64.
    digest = hashlib.blake2b(parent_hash or b"", digest_size=16)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class KVBlock:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0  # number of sequences whose block table holds this block
        self.hash: bytes | None = None  # set only while the prefix cache points at this block
        self.token_ids: tuple[int, ...] = ()  # the tokens behind `hash`, checked on every hit


class BlockManager:

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        # Blocks with ref_count 0, handed out from the front: blocks holding no cached prefix
        # sit at the front, cached ones join the back as they are freed (least recently used
        # are evicted first).
        self._free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached_block_ids: dict[bytes, int] = {}
        # seq_id -> hash chain of the sequence's full blocks computed so far
        self._seq_block_hashes: dict[int, list[bytes]] = {}
        self.prefix_cache_queried_tokens = 0
        self.prefix_cache_hit_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free_block_ids)

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_prefix(self, seq: Sequence) -> tuple[list[int], int]:
        """Longest run of cached blocks matching the start of `seq`: (block_ids, num_tokens)."""
        if not self._uses_prefix_cache(seq):
            return [], 0
        block_ids: list[int] = []
        parent_hash = None
        # The last token is always recomputed: its logits are needed to sample.
        for i in range((seq.num_tokens - 1) // self.block_size):
            token_ids = self._block_token_ids(seq, i)
            parent_hash = hash_block(parent_hash, token_ids)
            block_id = self._cached_block_ids.get(parent_hash)
            if block_id is None or self.blocks[block_id].token_ids != token_ids:
                break
            block_ids.append(block_id)
        return block_ids, len(block_ids) * self.block_size

    def allocate_slots(self, seq: Sequence, num_new_tokens: int,
                       prefix_block_ids: list[int] | tuple[int, ...] = ()) -> bool:
        """Grow seq.block_ids to hold `num_new_tokens` more tokens; all or nothing.

        On admission (seq holds no blocks) `prefix_block_ids` from `get_computed_prefix` are
        shared and counted as computed.
        """
        is_admission = not seq.block_ids
        if prefix_block_ids and not is_admission:
            raise ValueError(
                f"sequence {seq.request_id} already holds blocks; a prefix is only taken on admission")
        num_computed_tokens = (len(prefix_block_ids) * self.block_size if is_admission
                               else seq.num_computed_tokens)
        num_needed_blocks = self.num_blocks_for(num_computed_tokens + num_new_tokens)
        num_fresh_blocks = max(0, num_needed_blocks - len(seq.block_ids) - len(prefix_block_ids))
        # Cached prefix blocks nobody holds are counted as free: taking them uses up free blocks.
        num_revived_blocks = sum(1 for b in prefix_block_ids if self.blocks[b].ref_count == 0)
        if num_fresh_blocks + num_revived_blocks > self.num_free_blocks:
            return False

        if is_admission:
            # Take the prefix before popping fresh blocks so that none of it gets evicted.
            for block_id in prefix_block_ids:
                self._take(block_id)
            seq.block_ids = list(prefix_block_ids)
            seq.num_computed_tokens = seq.num_cached_tokens = num_computed_tokens
            if self._uses_prefix_cache(seq):
                self._seq_block_hashes[seq.seq_id] = [self.blocks[b].hash for b in prefix_block_ids]
                self.prefix_cache_queried_tokens += seq.num_tokens
                self.prefix_cache_hit_tokens += num_computed_tokens
        for _ in range(num_fresh_blocks):
            block_id = next(iter(self._free_block_ids))
            self._evict(block_id)
            self._take(block_id)
            seq.block_ids.append(block_id)
        return True

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks filled by computed tokens; call after the step computed them."""
        if not self._uses_prefix_cache(seq):
            return
        hashes = self._seq_block_hashes[seq.seq_id]  # seeded on admission
        for i in range(len(hashes), seq.num_computed_tokens // self.block_size):
            token_ids = self._block_token_ids(seq, i)
            if UNRESOLVED in token_ids:  # a draw still on the device: cached once it is filled in
                return
            hashes.append(hash_block(hashes[-1] if hashes else None, token_ids))
            block = self.blocks[seq.block_ids[i]]
            # Another sequence may have computed the same block first: keep its entry; this
            # copy goes back uncached when freed.
            if hashes[-1] not in self._cached_block_ids:
                block.hash, block.token_ids = hashes[-1], token_ids
                self._cached_block_ids[block.hash] = block.block_id

    def free(self, seq: Sequence) -> None:
        # Reverse order: a sequence's tail blocks are freed first and so evicted first, while
        # the shared head of a prefix survives longest.
        for block_id in reversed(seq.block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free_block_ids[block_id] = None
                if block.hash is None:
                    self._free_block_ids.move_to_end(block_id, last=False)
        seq.block_ids = []
        self._seq_block_hashes.pop(seq.seq_id, None)

    def _uses_prefix_cache(self, seq: Sequence) -> bool:
        # Prompt embeddings (merged image features) are not described by the token ids alone.
        return self.enable_prefix_caching and seq.prompt_embeds is None

    def _block_token_ids(self, seq: Sequence, index: int) -> tuple[int, ...]:
        return tuple(seq.token_ids[index * self.block_size:(index + 1) * self.block_size])

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free_block_ids[block_id]
        block.ref_count += 1

    def _evict(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.hash is not None:
            del self._cached_block_ids[block.hash]
            block.hash, block.token_ids = None, ()
