"""Building blocks shared by geometries, materials and backgrounds: positional encodings (hash grid, spherical
harmonics), MLPs and activations. Nothing here is registered; modules compose these."""
