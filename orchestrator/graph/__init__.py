"""Multi-stage task graphs: declare stages, allocate compute across them, run them.

``GraphSpec`` (Python, or a YAML/JSON file through ``load_graph``) declares the stages;
``Allocation`` says which model, strategy and budget each stage gets; ``solve_graph``
runs a graph on a problem as a checkpointed LangGraph run that resumes after an
interruption; ``search`` (AgentTTS) finds a good allocation.
"""

from .allocation import Allocation, SearchSpace, StageOption, TrialResult
from .replay import ReplayObjective, ReplayTable, optimum_set
from .run import GraphResult, StageOutput, compile_graph, run_graph
from .search import METHODS, SearchResult, search
from .solving import resume_graph, solve_graph
from .spec import GraphSpec, StageChoice, StageSpec, load_graph

__all__ = [
    "Allocation",
    "GraphResult",
    "GraphSpec",
    "METHODS",
    "ReplayObjective",
    "ReplayTable",
    "SearchResult",
    "SearchSpace",
    "StageChoice",
    "StageOption",
    "StageOutput",
    "StageSpec",
    "TrialResult",
    "compile_graph",
    "load_graph",
    "optimum_set",
    "resume_graph",
    "run_graph",
    "search",
    "solve_graph",
]
