"""Transactions (Prefect's `prefect.transactions`)."""

from ._transactions import CommitMode as CommitMode
from ._transactions import IsolationLevel as IsolationLevel
from ._transactions import Transaction as Transaction
from ._transactions import TransactionState as TransactionState
from ._transactions import get_transaction as get_transaction
from ._transactions import transaction as transaction

__all__ = ["CommitMode", "IsolationLevel", "Transaction", "TransactionState", "get_transaction", "transaction"]
