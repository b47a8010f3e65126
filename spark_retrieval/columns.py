"""Column names shared by every module: the one place they are spelled out."""

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

QUERY_ID = "query_id"
LAST_ITEM = "last_item"
RECENT_ITEMS = "recent_items"

RECOMMENDATIONS = "recommendations"
NEIGHBOURS = "neighbours"
SCORE = "score"

TITLE = "title"
GENRES = "genres"
YEAR = "year"
GENDER = "gender"
AGE = "age"
OCCUPATION = "occupation"
ZIP = "zip"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)
