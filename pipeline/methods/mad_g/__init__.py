"""MAD-G (Ansell et al., Findings of EMNLP 2021): one contextual parameter generator that maps a
language's URIEL typology vector to that language's MAD-X language adapter.

``generator.py`` has the generator, its in-place forward and the decontextualisation of one
language's adapter into an ordinary MAD-X adapter; ``training.py`` the multilingual masked-LM
training with the encoder frozen. The generator's files are a checked directory
(pipeline/formats/mad_g_generator.py). Not registered as a method yet: that wiring comes later.
"""
