"""docs/taxonomy.md is what the analysis says, and the analysis reproduces the paper's Table I."""

from pathlib import Path

import pytest

from einsim.einsum_cascades.taxonomy import PAPER_TABLE_I, classify, render

ROOT = Path(__file__).resolve().parent.parent


def test_committed_taxonomy_matches_the_generator():
    committed = (ROOT / "docs" / "taxonomy.md").read_text()
    assert committed == render(), "regenerate: python -m einsim.einsum_cascades.taxonomy > docs/taxonomy.md"


@pytest.mark.parametrize("algorithm", sorted(PAPER_TABLE_I))
def test_analysis_puts_each_algorithm_in_the_papers_column(algorithm):
    cascade, passes = classify()[algorithm]
    assert passes == PAPER_TABLE_I[algorithm], f"{algorithm} ({cascade})"
