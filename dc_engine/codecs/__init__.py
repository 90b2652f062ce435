"""Array codecs of Stage 3 and the layer payload (no model, file or training knowledge).

- :mod:`.codebook`: weight sharing's arithmetic (1-D k-means, codebooks, indices, the summed
  centroid gradient);
- :mod:`.bitpack`: fixed-width bit packing (and the uncoded stream coder);
- :mod:`.relindex`: the relative sparse index with filler entries;
- :mod:`.huffman`: canonical, length-limited Huffman coding (the default stream coder);
- :mod:`.coders`: the stream-coder interface and registry;
- :mod:`.payload`: one layer's self-checking payload bytes.
"""
