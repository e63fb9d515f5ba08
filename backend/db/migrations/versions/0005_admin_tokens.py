"""api_tokens.is_admin: tokens that may ask for what the server reserves to admins (trust_remote_code)

Revision ID: 0005
Revises: 0004

Tokens created before this revision are not admin tokens.
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("is_admin")
