// The one-row leaves' GFNI nibble move (one_kquant_leaf.inc, one32_leaf.inc). Include only in a
// build whose target has GFNI, after avx2_blocks.h (INLINE), inside its target region.
#ifndef MOEK_GFNI_NIBBLES_H
#define MOEK_GFNI_NIBBLES_H

/// The high nibble of each byte of v, in the byte's low 4 bits, by one affine bit matrix: output
/// bit i takes input bit 4 + i (byte 7 - i of the matrix is 1 << (4 + i)), where a shift and a
/// mask took two of the vector pipes' operations, which bound the leaves.
INLINE __m512i gfni_high_nibbles(__m512i v) {
  return _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(0x1020408000000000ll), 0);
}

#endif
