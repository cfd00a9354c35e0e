"""Evaluation: embeddings of a benchmark split, exact kNN retrieval (faiss) with mMP@k and R@1 per domain
(UnED protocol), and the tables and charts that report them.
"""

from __future__ import annotations

from udon_core.evaluation.embedding import EmbeddingSet, embed_benchmark, embed_folder, embed_records, eval_files
from udon_core.evaluation.report import (
    comparison_rows,
    format_by_metric,
    format_comparison,
    format_markdown,
    format_table,
    plot_report,
)
from udon_core.evaluation.retrieval import (
    DomainMetrics,
    LabelSets,
    RetrievalReport,
    count_relevant,
    evaluate_embeddings,
    knn_search,
    per_query_scores,
    relevance,
)
from udon_core.evaluation.scoring import embed_split, evaluate_model, evaluate_oracle_teachers

__all__ = [
    "comparison_rows", "count_relevant", "DomainMetrics", "embed_benchmark", "embed_folder", "embed_records",
    "embed_split", "EmbeddingSet", "eval_files", "evaluate_embeddings", "evaluate_model", "evaluate_oracle_teachers",
    "format_by_metric", "format_comparison", "format_markdown", "format_table", "knn_search", "LabelSets",
    "per_query_scores", "plot_report", "relevance", "RetrievalReport",
]
