"""Transactions (Prefect's `prefect.transactions`)."""

from ._transactions import AsyncTransaction as AsyncTransaction
from ._transactions import CommitMode as CommitMode
from ._transactions import IsolationLevel as IsolationLevel
from ._transactions import Transaction as Transaction
from ._transactions import TransactionState as TransactionState
from ._transactions import atransaction as atransaction
from ._transactions import get_transaction as get_transaction
from ._transactions import transaction as transaction

__all__ = ["AsyncTransaction", "CommitMode", "IsolationLevel", "Transaction", "TransactionState", "atransaction",
           "get_transaction", "transaction"]
