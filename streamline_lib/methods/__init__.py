"""The pruning methods: scoring layers and blocks, removing them, what stands in for them, training and healing.

LLM-Streamline (:mod:`~streamline_lib.methods.scoring`, :mod:`~streamline_lib.methods.pruning`,
:mod:`~streamline_lib.methods.replacement`, :mod:`~streamline_lib.methods.training`), its peers
(ShortGPT and SLEB in scoring, ReplaceMe in :mod:`~streamline_lib.methods.linear_replacement`,
Gromov et al.'s healing in :mod:`~streamline_lib.methods.healing`, SHARP in
:mod:`~streamline_lib.methods.sharing`), and how many layers a sparsity is
(:mod:`~streamline_lib.methods.sparsity`) and what each method costs (:mod:`~streamline_lib.methods.costs`).
"""
