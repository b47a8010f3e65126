"""Column names of the training files: the contract between the Spark job that writes them and the ranks that read them.

Examples hold every user-tower input (encoded, see ``schema.encoded_column``), the positive item's index
and, for the sampled-negative losses, the negatives' indices; the item table holds every item-tower input
per item index plus ``log_q``, the log of the item's share of the positives.
"""

POSITIVE_ITEM = "item__item_id"
NEGATIVE_ITEMS = "negative_items"
LOG_Q = "log_q"
