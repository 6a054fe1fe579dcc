"""MAD-G (Ansell et al., Findings of EMNLP 2021): one contextual parameter generator that maps a
language's URIEL typology vector to that language's MAD-X language adapter.

``generator.py`` has the generator, its in-place forward and the decontextualisation of one
language's adapter into an ordinary MAD-X adapter; ``training.py`` the multilingual masked-LM
training with the encoder frozen; ``sampling.py`` the one-language batches; ``build.py`` the
generator stage's work (train, save, generate every language's adapter); ``method.py`` the
registered methods `mad-g` and `mad-g-ls`; ``settings.py`` the ``mad_g`` params section. The
generator's files are a checked directory (pipeline/formats/mad_g_generator.py).
"""

from pipeline.methods.mad_g import method  # noqa: F401  (registers mad-g, mad-g-ls)
